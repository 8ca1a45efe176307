"""An action hook's Redis side, as the API and the forwarder both need it.

Each hook is a consumer group (`hook:<id>`) on every committed stream, plus its
own replay stream (replays and re-queued dead letters) and dead-letter stream.
The API creates and destroys them with the hook and shows backlogs and dead
letters; the forwarder recreates the groups when Redis lost them.

On Redis Cluster a command (and a MULTI) may touch one hash slot only: each
DEL names one key, and what spans slots (the hooks' count and version, a dead
letter moved to the replay stream) is done in an order that a crash between
the steps leaves safe.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from tracker.contract.events import decode_batch
from tracker.contract.keys import (
    committed_streams,
    hook_dead_letter_stream,
    hook_group,
    hook_replay_stream,
    hooks_count_key,
    hooks_version_key,
)
from tracker.streams.consumer import as_text


async def create_groups(redis: Any, prefix: str, shards: int, hook_id: int) -> None:
    """The hook's consumer groups, from now on: a new hook gets events committed after it was made.

    Safe to repeat (the worker does at start, in case Redis lost them).
    """
    from redis.exceptions import ResponseError

    targets = [(stream, "$") for stream in committed_streams(prefix, shards)]
    targets.append((hook_replay_stream(prefix, hook_id), "0"))
    for stream, start in targets:
        try:
            await redis.xgroup_create(stream, hook_group(hook_id), id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


async def destroy_groups(redis: Any, prefix: str, shards: int, hook_id: int) -> None:
    """Forget the hook in Redis: its groups (so trimming no longer waits for it) and its own streams."""
    async with redis.pipeline(transaction=False) as pipe:
        for stream in committed_streams(prefix, shards):
            pipe.xgroup_destroy(stream, hook_group(hook_id))
        pipe.delete(hook_replay_stream(prefix, hook_id))
        pipe.delete(hook_dead_letter_stream(prefix, hook_id))
        await pipe.execute(raise_on_error=False)


async def set_hooks_count(redis: Any, prefix: str, shards: int, count: int) -> None:
    """Tell the flusher whether to forward; with no hook left, drop the committed streams too.

    In this order, each key on its own (they are in different slots): the count first, so that no
    flusher forwards to streams about to go; a failure between the steps is repaired by a retry or
    by the forwarder, which sets the count again at its start.
    """
    await redis.set(hooks_count_key(prefix), count)
    await redis.incr(hooks_version_key(prefix))
    if count == 0:
        async with redis.pipeline(transaction=False) as pipe:
            for stream in committed_streams(prefix, shards):
                pipe.delete(stream)
            await pipe.execute()


async def backlog_entries(redis: Any, prefix: str, shards: int, hook_id: int) -> int:
    """Stream entries the hook has not acknowledged: pending plus not yet read, over all its streams."""
    total = 0
    group = hook_group(hook_id).encode()
    for stream in [*committed_streams(prefix, shards), hook_replay_stream(prefix, hook_id)]:
        try:
            groups = await redis.xinfo_groups(stream)
        except Exception as exc:  # no such stream yet
            if "no such key" in str(exc).lower():
                continue
            raise
        for info in groups:
            name = info.get("name")
            if (name.encode() if isinstance(name, str) else name) != group:
                continue
            lag = info.get("lag")
            if lag is None:  # Redis cannot tell (entries deleted): count what follows the group's cursor
                last = info.get("last-delivered-id")
                lag = len(await redis.xrange(stream, min=f"({as_text(last)}", max="+"))
            total += int(info.get("pending") or 0) + int(lag)
    return total


async def dead_letters(redis: Any, prefix: str, hook_id: int, count: int = 100) -> list[dict[str, Any]]:
    """The oldest dead-lettered deliveries of a hook: when, why, how many events."""

    found = []
    for entry_id, fields in await redis.xrange(hook_dead_letter_stream(prefix, hook_id), count=count):
        events = decode_batch(fields[b"e"])
        found.append({
            "id": as_text(entry_id),
            "at": float(fields.get(b"at", b"0")),
            "error": as_text(fields.get(b"error", b"")),
            "attempts": int(fields.get(b"attempts", b"0")),
            "events": len(events),
            "event_ids": [str(uuid.UUID(bytes=event.id)) for event in events[:20]],
        })  # fmt: skip
    return found


async def requeue_dead_letters(redis: Any, prefix: str, hook_id: int, page: int = 500) -> int:
    """Move every dead letter of the hook to its replay stream, a page at a time; events moved.

    Each page is added to the replay stream, then deleted from the dead letters (the two streams are
    in different slots, so not in one MULTI): a crash between the two sends that page again, as any
    action-hook delivery may be; none is lost.
    """

    moved = 0
    source, target = hook_dead_letter_stream(prefix, hook_id), hook_replay_stream(prefix, hook_id)
    while entries := await redis.xrange(source, count=page):
        async with redis.pipeline(transaction=False) as pipe:
            for _entry_id, fields in entries:
                pipe.xadd(target, {b"e": fields[b"e"]})
            await pipe.execute()
        await redis.xdel(source, *[entry_id for entry_id, _fields in entries])
        moved += sum(len(decode_batch(fields[b"e"])) for _, fields in entries)
    return moved


# Slots are members of a sorted set scored by when they lapse: a slot whose edge died frees itself.
_CLAIM_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(ARGV[2]) * 1000) + 1000)
return 1
"""


async def claim_test_slot(redis: Any, key: str, request_id: str, limit: int, hold_s: float) -> bool:
    """One of `limit` test deliveries at once over all edges, held for `hold_s` at most; False when none is free."""
    now = time.time()
    return bool(await redis.eval(_CLAIM_SLOT, 1, key, now, now + hold_s, limit, request_id))


async def release_test_slot(redis: Any, key: str, request_id: str) -> None:
    await redis.zrem(key, request_id)

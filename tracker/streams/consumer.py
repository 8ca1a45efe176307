"""One consumer in one consumer group over several streams: what the flusher and each action hook read with.

    read        this consumer's own pending entries first (left by a crash, a
                pause or a shutdown), each stream from its own cursor; then new
                entries, with an optional BLOCK
    reclaim     entries idle too long in any consumer of the group, following
                each stream's XAUTOCLAIM cursor across calls
    acknowledge XACK in one pipeline, with the caller's own commands before
                them (not in MULTI/EXEC by default: a full Redis refuses a
                transaction holding XACK, but not XACK itself)
    trim        each stream to the oldest entry any group still needs (a Lua
                script, so the groups cannot move between reading and trimming)
    forget      consumers of the group idle longer than `forget_idle_ms` with
                nothing pending (dead processes), at each reclaim pass and on
                request; never this consumer (a Lua script, so none can take an
                entry between the check and the removal)

What a full Redis (maxmemory, noeviction) still allows is enough to drain:
XREADGROUP, XACK, XAUTOCLAIM and the trim script work; XGROUP CREATE is refused
even for a group that exists, so `ensure_groups` accepts that refusal when
XINFO GROUPS shows the group.

Replies of XREADGROUP and XAUTOCLAIM are taken raw from hiredis (no per-entry
dict building in redis-py), which matters at 100k+ entries a second: open the
client with `open_redis`. An entry is `[id, [field, value, ...]]`, or `[id, None]`
when it was deleted while pending; `field_value` reads one field of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from tracker.streams.cluster import is_cluster, open_cluster
from tracker.streams.failures import error_text, is_operational, is_out_of_memory

# Trim one stream to the oldest entry any group still needs: the smallest
# pending id, or just past last-delivered-id for a group with nothing pending.
# Entries not yet delivered to every group are never removed. One script, so
# the groups' state cannot move between reading it and trimming.
TRIM_SCRIPT = """
local function parse(id)
    local dash = string.find(id, '-', 1, true)
    return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function less(a, b)
    local am, as = parse(a)
    local bm, bs = parse(b)
    return am < bm or (am == bm and as < bs)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
local floor = nil
for _, group in ipairs(groups) do
    local info = {}
    for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
    local candidate
    if info['pending'] > 0 then
        candidate = redis.call('XPENDING', KEYS[1], info['name'])[2]
    else
        local ms, seq = parse(info['last-delivered-id'])
        candidate = string.format('%.0f-%.0f', ms, seq + 1)
    end
    if floor == nil or less(candidate, floor) then floor = candidate end
end
if floor == nil then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', floor)
"""

# Remove the consumers of a group that are idle longer than ARGV[3] ms with nothing pending, except
# ARGV[2] (the caller). In one script: no consumer can take an entry between the check and the
# removal (XGROUP DELCONSUMER drops a consumer's pending entries with it).
FORGET_SCRIPT = """
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(consumers) ~= 'table' or consumers['err'] then return {} end
local removed = {}
for _, consumer in ipairs(consumers) do
    local info = {}
    for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
    if info['name'] ~= ARGV[2] and info['pending'] == 0 and info['idle'] > tonumber(ARGV[3]) then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
        table.insert(removed, info['name'])
    end
end
return removed
"""

_log = logging.getLogger("tracker.streams")
Found = list[tuple[str, list]]  # (stream, raw entries), streams with no entry left out


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def field_value(fields: list | None, name: bytes) -> Any:
    """One field of a raw entry's flat `[field, value, ...]` list; None when absent or deleted."""
    if fields:
        for i in range(0, len(fields) - 1, 2):
            if fields[i] == name:
                return fields[i + 1]
    return None


def _raw(response: Any, **options: Any) -> Any:
    return response


def open_redis(url: str, *, timeout_s: float, connect_timeout_s: float, health_check_interval: int = 0,
               cluster: bool = False) -> Redis:  # fmt: skip
    """A client whose XREADGROUP and XAUTOCLAIM replies are left as hiredis gives them (RESP2 lists).

    `cluster`: redis-py's cluster client over the seed nodes in `url` (tracker.streams.cluster), which
    GroupConsumer reads one stream at a time (a command may not span hash slots there).
    """
    options: dict[str, Any] = dict(
        protocol=2,  # the raw reply shapes are RESP2's (lists, not maps)
        socket_timeout=timeout_s,
        socket_connect_timeout=connect_timeout_s,
        health_check_interval=health_check_interval,
        # One immediate reconnect (a pooled connection Redis closed; on a cluster, one more try after reading
        # the slot map again); any other failure is for tracker.streams.retry, which logs and paces it,
        # rather than redis-py's own backoff of up to 10 tries hidden inside one command.
        retry=RedisRetry(NoBackoff(), 1),
    )
    if cluster:
        client: Any = open_cluster(url, **options)
    else:
        client = Redis.from_url(url, **options)
    client.set_response_callback("XREADGROUP", _raw)
    client.set_response_callback("XAUTOCLAIM", _raw)
    return client


class GroupConsumer:
    """`consumer` in `group` on `streams`; `start_id`: where `ensure_groups` starts a group it makes.

    `forget_idle_ms`: consumers idle longer than this with nothing pending are removed from the group
    (`forget_dead_consumers`, also at the end of each stream's reclaim pass); None: never.
    """

    def __init__(self, redis: Redis, streams: list[str], group: str, consumer: str, *, claim_idle_ms: int,
                 start_id: str = "0", forget_idle_ms: int | None = None,
                 log: logging.Logger = _log) -> None:  # fmt: skip
        self.redis = redis
        self.streams = list(streams)
        self.group = group
        self.consumer = consumer
        self.claim_idle_ms = claim_idle_ms
        self.start_id = start_id
        self.forget_idle_ms = forget_idle_ms
        self.log = log
        self._trim = redis.register_script(TRIM_SCRIPT)
        self._forget = redis.register_script(FORGET_SCRIPT)
        # Own pending entries are re-read first, from each stream's cursor; None: done.
        self._pending_from: dict[str, bytes | None] = dict.fromkeys(self.streams, b"0")
        self._claim_from: dict[str, bytes] = dict.fromkeys(self.streams, b"0-0")
        self._one_slot_each = is_cluster(redis) and len(self.streams) > 1

    async def ensure_groups(self) -> None:
        """Make the group on every stream (and the stream) where it is missing; safe to repeat.

        A full Redis refuses XGROUP CREATE even for a group that exists: fine when it does
        (XINFO GROUPS says so); else the refusal (OutOfMemoryError) is raised, to be retried.
        """
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id=self.start_id, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" in str(exc):
                    continue
                if is_out_of_memory(exc) and await self.has_group(stream):
                    continue
                raise

    async def has_group(self, stream: str) -> bool:
        try:
            groups = await self.redis.xinfo_groups(stream)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return False
            raise
        return any(as_text(group["name"]) == self.group for group in groups)

    async def forget_dead_consumers(self, streams: Iterable[str] | None = None) -> list[str]:
        """Remove consumers idle longer than `forget_idle_ms` with nothing pending (never this one).

        Returns "stream/name" of each removed. A full Redis 6 refuses XGROUP DELCONSUMER: skipped
        then, and tried again at the next pass.
        """
        if self.forget_idle_ms is None:
            return []
        removed = []
        for stream in self.streams if streams is None else streams:
            try:
                names = await self._forget(keys=[stream], args=[self.group, self.consumer, self.forget_idle_ms])
            except ResponseError as exc:
                if not is_out_of_memory(exc):
                    raise
                self.log.debug("removing dead consumers of %s on %s postponed: %s", self.group, stream,
                               error_text(exc))  # fmt: skip
                continue
            removed.extend(f"{stream}/{as_text(name)}" for name in names or ())
        if removed:
            self.log.info("removed %d consumers of group %s idle more than %.0fs with nothing pending: %s",
                          len(removed), self.group, self.forget_idle_ms / 1000, ", ".join(removed))  # fmt: skip
        return removed

    @property
    def own_pending_done(self) -> bool:
        return all(cursor is None for cursor in self._pending_from.values())

    def reread_own_pending(self) -> None:
        """Go back to this consumer's pending entries (after leaving some unacknowledged)."""
        self._pending_from = dict.fromkeys(self.streams, b"0")

    async def read(self, count: int, block_ms: int | None = None) -> Found:
        """New entries (or, until they are all back, this consumer's own pending ones, without blocking).

        COUNT is per stream: a read may bring up to `len(streams) * count` entries.
        """
        pending = not self.own_pending_done
        if not pending:
            streams, ids = self.streams, [">"] * len(self.streams)
            block = ["BLOCK", block_ms] if block_ms else []
        else:
            streams = [s for s, cursor in self._pending_from.items() if cursor is not None]
            ids, block = [self._pending_from[s] for s in streams], []
        if self._one_slot_each:
            found = await self._read_each(streams, ids, count, block)
        else:
            reply = await self.redis.execute_command(
                "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count, *block, "STREAMS", *streams, *ids,
            )  # fmt: skip
            found = [(as_text(name), entries) for name, entries in reply or ()]
        if pending:
            got = dict(found)
            for stream in streams:
                entries = got.get(stream)
                self._pending_from[stream] = entries[-1][0] if entries else None
        return [(name, entries) for name, entries in found if entries]

    async def _read_each(self, streams: list[str], ids: list, count: int, block: list) -> Found:
        """On a cluster, one XREADGROUP per stream (each its own hash slot), all at once.

        Without waiting first, so that entries on any shard come back at once; only when none has any
        do they all block, and the read ends when the last one does (at most `block_ms` later).
        """

        async def one(stream: str, entry_id: Any, wait: list) -> list:
            return await self.redis.execute_command(
                "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count, *wait, "STREAMS", stream, entry_id,
            )  # fmt: skip

        found: Found = []
        for wait in ([], block) if block else ([],):
            replies = await asyncio.gather(*(one(s, i, wait) for s, i in zip(streams, ids, strict=True)))
            found = [(as_text(name), entries) for reply in replies for name, entries in reply or ()]
            if any(entries for _name, entries in found):
                break
        return found

    async def reclaim(self, count: int) -> Found:
        """Entries idle longer than the claim time in any consumer, taken over by this one.

        Each stream's XAUTOCLAIM cursor is followed across calls; a call stops
        early once `count` entries are in hand. When a stream's pass is over (its
        cursor back at the start), its dead consumers are forgotten.
        """
        found = []
        passed = []
        for stream in self.streams:
            while count > 0:
                reply = await self.redis.execute_command(
                    "XAUTOCLAIM", stream, self.group, self.consumer, self.claim_idle_ms, self._claim_from[stream],
                    "COUNT", count,
                )  # fmt: skip
                cursor, entries = reply[0], reply[1]
                self._claim_from[stream] = cursor
                if entries:
                    found.append((stream, entries))
                    count -= len(entries)
                if cursor in (b"0-0", "0-0"):
                    passed.append(stream)
                    break
        if passed:
            try:
                await self.forget_dead_consumers(passed)
            except Exception as exc:  # housekeeping: never at the cost of the entries claimed
                level = logging.DEBUG if is_operational(exc) else logging.WARNING
                self.log.log(level, "removing dead consumers of %s failed: %s", self.group, error_text(exc))
        return found

    async def acknowledge(self, acks: Mapping[str, Iterable[bytes]], *, transaction: bool = False,
                          before: Callable[[Pipeline], None] | None = None) -> None:  # fmt: skip
        """XACK the entries in one pipeline (MULTI/EXEC with `transaction`), after `before(pipe)`'s commands."""
        async with self.redis.pipeline(transaction=transaction) as pipe:
            if before is not None:
                before(pipe)
            for stream, ids in acks.items():
                ids = list(ids)
                if ids:
                    pipe.xack(stream, self.group, *ids)
            await pipe.execute()

    async def trim(self, streams: Iterable[str]) -> int:
        """Entries removed; a failure is raised, and the next call trims what this one did not."""
        removed = 0
        for stream in streams:
            removed += await self._trim(keys=[stream])
        return removed

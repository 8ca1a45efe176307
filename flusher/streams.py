"""The Redis side: the consumer group on each shard, reading, reclaiming, acknowledging, trimming.

Replies of XREADGROUP and XAUTOCLAIM are taken raw from hiredis (no per-entry
dict building in redis-py), which matters at 100k+ entries a second.
"""

from __future__ import annotations

import json
import time

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from flusher.batch import Fault
from tracker.config import Settings
from tracker.contract.keys import CONSUMER_GROUP, dead_letter_stream, event_streams, flusher_heartbeat_key

# Trim one stream to the oldest entry any group still needs: the smallest
# pending id, or just past last-delivered-id for a group with nothing pending.
# Entries not yet delivered to every group are never removed. One script, so
# the groups' state cannot move between reading it and trimming.
_TRIM_SCRIPT = """
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


def _raw(response, **options):
    return response


def open_redis(settings: Settings) -> Redis:
    client = Redis.from_url(
        settings.redis_url,
        protocol=2,  # the raw reply shapes below are RESP2's (lists, not maps)
        socket_timeout=max(10.0, settings.redis_timeout_s),
        socket_connect_timeout=max(2.0, settings.redis_timeout_s),
        health_check_interval=30,
    )
    client.set_response_callback("XREADGROUP", _raw)
    client.set_response_callback("XAUTOCLAIM", _raw)
    return client


class EventStreams:
    """The flusher's view of the shards: one consumer (`consumer`) in the shared group."""

    def __init__(self, redis: Redis, settings: Settings, consumer: str) -> None:
        self.redis = redis
        self.consumer = consumer
        self.streams = event_streams(settings.stream_prefix, settings.stream_shards)
        self.dead_letter = dead_letter_stream(settings.stream_prefix)
        self.dead_letter_max_len = settings.flusher.dead_letter_max_len
        self.claim_idle_ms = settings.flusher.claim_idle_ms
        self.heartbeat_key = flusher_heartbeat_key(settings.stream_prefix, consumer)
        self.heartbeat_ttl = settings.flusher.heartbeat_ttl_s
        # Own pending entries are re-read first, from each stream's cursor; None: done.
        self._pending_from: dict[str, bytes | None] = dict.fromkeys(self.streams, b"0")
        self._claim_from: dict[str, bytes] = dict.fromkeys(self.streams, b"0-0")
        self._trim = redis.register_script(_TRIM_SCRIPT)

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                # From the first entry: whatever the edge wrote before any flusher ran is kept.
                await self.redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    @property
    def own_pending_done(self) -> bool:
        return all(cursor is None for cursor in self._pending_from.values())

    async def read(self, count: int, block_ms: int | None) -> list[tuple[str, list]]:
        """New entries (or, until they are all back, this consumer's own pending ones)."""
        if self.own_pending_done:
            streams, ids = self.streams, [">"] * len(self.streams)
            block = ["BLOCK", block_ms] if block_ms else []
        else:
            streams = [s for s, cursor in self._pending_from.items() if cursor is not None]
            ids, block = [self._pending_from[s] for s in streams], []
        reply = await self.redis.execute_command(
            "XREADGROUP", "GROUP", CONSUMER_GROUP, self.consumer, "COUNT", count, *block,
            "STREAMS", *streams, *ids,
        )  # fmt: skip
        found = [(_text(name), entries) for name, entries in reply or ()]
        if not self.own_pending_done:
            got = {name: entries for name, entries in found}
            for stream in streams:
                entries = got.get(stream)
                self._pending_from[stream] = entries[-1][0] if entries else None
            found = [(name, entries) for name, entries in found if entries]
        return found

    async def reclaim(self, count: int) -> list[tuple[str, list]]:
        """Entries idle longer than the claim time in any consumer, taken over by this one.

        Each stream's XAUTOCLAIM cursor is followed across calls; a call stops
        early once `count` entries are in hand.
        """
        found = []
        for stream in self.streams:
            while count > 0:
                reply = await self.redis.execute_command(
                    "XAUTOCLAIM", stream, CONSUMER_GROUP, self.consumer, self.claim_idle_ms,
                    self._claim_from[stream], "COUNT", count,
                )  # fmt: skip
                cursor, entries = reply[0], reply[1]
                self._claim_from[stream] = cursor
                if entries:
                    found.append((stream, entries))
                    count -= len(entries)
                if cursor in (b"0-0", "0-0"):
                    break
        return found

    async def acknowledge(self, acks: dict[str, list[bytes]], faults: list[Fault]) -> None:
        """Dead-letter the faults and acknowledge every entry, in one MULTI/EXEC."""
        async with self.redis.pipeline(transaction=True) as pipe:
            now = str(time.time())
            for fault in faults:
                pipe.xadd(
                    self.dead_letter,
                    {
                        b"e": fault.payload,
                        b"reason": fault.reason,
                        b"stream": fault.stream,
                        b"entry": fault.entry_id,
                        b"consumer": self.consumer,
                        b"at": now,
                    },
                    maxlen=self.dead_letter_max_len,
                    approximate=True,
                )
            for stream, ids in acks.items():
                if ids:
                    pipe.xack(stream, CONSUMER_GROUP, *ids)
            await pipe.execute()

    async def trim(self, streams: list[str]) -> int:
        removed = 0
        for stream in streams:
            removed += await self._trim(keys=[stream])
        return removed

    async def heartbeat(self, facts: dict) -> None:
        await self.redis.set(self.heartbeat_key, json.dumps(facts), ex=self.heartbeat_ttl)

    async def forget_heartbeat(self) -> None:
        await self.redis.delete(self.heartbeat_key)


def _text(name: bytes | str) -> str:
    return name.decode() if isinstance(name, bytes) else name

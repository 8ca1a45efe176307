"""Room for the consumer group when Redis is full: drain streams that have no group yet, without one.

A flusher starting for the first time while Redis is at maxmemory (the edge
filled it while no flusher ran) cannot make its group: XGROUP CREATE is refused
and nothing frees memory, as only the flusher ever trims the event streams. So
each stream without the group is drained from its start without one: XRANGE
(allowed when full), the usual commit and copy for the hooks, then XTRIM MINID
just past the last entry stored (allowed too), which frees memory. As soon as
XGROUP CREATE passes, the group starts at the first entry left, as it would
have anyway. Entries stored here and read again by the group (a trim that
failed, a second flusher) are only duplicates, which the insert drops.

A batch with faults still needs its dead letters written, which a full Redis
refuses: that batch waits for memory like any write that needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from flusher.batch import Batch
from tracker.streams.consumer import GroupConsumer, as_text
from tracker.streams.retry import Retry

log = logging.getLogger("flusher")


def next_id(entry_id: bytes | str) -> str:
    """The smallest stream id after `entry_id`."""
    ms, seq = as_text(entry_id).split("-", 1)
    return f"{ms}-{int(seq) + 1}"


class GrouplessDrain:
    """`drain()` one batch from each stream of `consumer` that has no group; `flush(batch)` commits without acking."""

    def __init__(self, redis: Redis, consumer: GroupConsumer, flush: Callable[[Batch], Awaitable[None]],
                 retry: Retry, entries: int) -> None:  # fmt: skip
        self.redis = redis
        self.consumer = consumer
        self.flush = flush
        self.retry = retry
        self.entries = entries
        self.drained = 0  # entries stored and trimmed this way
        self._said = False

    async def drain(self) -> int:
        """Entries stored and trimmed now (0: nothing to drain, memory must come from elsewhere)."""
        drained = 0
        for stream in self.consumer.streams:
            if await self.consumer.has_group(stream):
                continue
            entries = await self.redis.xrange(stream, count=self.entries)
            if not entries:
                continue
            if not self._said:
                self._said = True
                log.warning("Redis is full and group %s is missing: storing the oldest entries without the group "
                            "and trimming them, to make room for it", self.consumer.group)  # fmt: skip
            batch = Batch()
            batch.add(stream, [[entry_id, [part for pair in fields.items() for part in pair]]
                               for entry_id, fields in entries])  # fmt: skip
            await self.flush(batch)
            after = next_id(entries[-1][0])
            await self.retry.run("Redis: trim what was stored without the group",
                                 lambda s=stream, a=after: self.redis.xtrim(s, minid=a, approximate=False))  # fmt: skip
            drained += len(entries)
        self.drained += drained
        return drained

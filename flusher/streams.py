"""The flusher's streams: its consumer in the group on every event shard, and the dead-letter stream.

Reading, reclaiming, acknowledging and trimming are tracker.streams.consumer's
(shared with the forwarder); what is the flusher's own is which streams and
group, where a new group starts, and what a dead letter holds.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from flusher.batch import Fault
from tracker.config import Settings
from tracker.contract.keys import CONSUMER_GROUP, dead_letter_stream, event_streams
from tracker.streams.consumer import GroupConsumer, open_redis


def open_flusher_redis(settings: Settings) -> Redis:
    return open_redis(
        settings.redis_url,
        timeout_s=max(10.0, settings.redis_timeout_s),
        connect_timeout_s=max(2.0, settings.redis_timeout_s),
        health_check_interval=30,
        cluster=settings.redis_cluster,
    )


def event_consumer(redis: Redis, settings: Settings, consumer: str) -> GroupConsumer:
    """`consumer` in the group on every shard; a group made here starts at the first entry, so whatever the edge
    wrote before any flusher ran is kept."""
    streams = event_streams(settings.stream_prefix, settings.stream_shards)
    flusher = settings.flusher
    return GroupConsumer(redis, streams, CONSUMER_GROUP, consumer, claim_idle_ms=flusher.claim_idle_ms,
                         start_id="0", forget_idle_ms=dead_consumer_idle_ms(flusher.claim_idle_ms,
                                                                            flusher.heartbeat_ttl_s))  # fmt: skip


def dead_consumer_idle_ms(claim_idle_ms: int, heartbeat_ttl_s: float) -> int:
    """Idle this long with nothing pending, a consumer is taken for dead and removed from its group."""
    return int(max(claim_idle_ms, 2 * heartbeat_ttl_s * 1000))


class DeadLetters:
    """Entries or events set aside with a reason, XADDed before the batch's XACKs (not in MULTI/EXEC: a full
    Redis refuses that whole transaction, where XACK alone still works). A crash between the two writes the
    letters again on redelivery."""

    def __init__(self, settings: Settings, consumer: str) -> None:
        self.stream = dead_letter_stream(settings.stream_prefix)
        self.max_len = settings.flusher.dead_letter_max_len
        self.consumer = consumer

    async def write(self, redis: Redis, faults: list[Fault]) -> None:
        """XADD one letter per fault, in one round trip; safe to repeat (a repeat writes them again)."""
        if not faults:
            return
        now = str(time.time())
        async with redis.pipeline(transaction=False) as pipe:
            for fault in faults:
                fields = {b"e": fault.payload, b"reason": fault.reason, b"stream": fault.stream,
                          b"entry": fault.entry_id, b"consumer": self.consumer, b"at": now}  # fmt: skip
                pipe.xadd(self.stream, fields, maxlen=self.max_len, approximate=True)
            await pipe.execute()

"""The flusher's side of the hooks: copy each committed batch to the committed streams.

Called after the Postgres commit and before the XACK, so a hook sees only
committed events, and a crash in between is repaired by redelivery: the batch
is stored again as duplicates and forwarded again with the same event ids.
Events found to be duplicates of stored rows are forwarded too, for that reason.

Without hooks it costs one GET every TRACKER_HOOKS_CHECK_INTERVAL_S.
"""

from __future__ import annotations

import time

import msgspec
from redis.asyncio import Redis

from flusher.batch import Batch
from tracker.config import Settings
from tracker.contract.events import Event
from tracker.contract.keys import ENTRY_FIELD, committed_stream, event_stream, hooks_count_key, shard_for
from tracker.domain.verdicts import CLICKS

# A list of Events encodes to the same bytes as tracker.contract.events.encode_batch of the encoded events.
_encode = msgspec.msgpack.Encoder().encode


class CommittedFeed:
    """Owned by the flusher (one per process); `forward(batch)` after each commit."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.count_key = hooks_count_key(settings.stream_prefix)
        self.prefix, self.shards = settings.stream_prefix, settings.stream_shards
        self.check_every = settings.flusher.committed_check_interval_s
        self.entry_max = settings.flusher.committed_entry_max_events
        # event stream -> committed stream of the same shard
        self.target = {
            event_stream(settings.stream_prefix, shard): committed_stream(settings.stream_prefix, shard)
            for shard in range(settings.stream_shards)
        }
        self._hooks_exist = False
        self._checked_at = -1e18
        self.forwarded = 0

    async def hooks_exist(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= self.check_every:
            count = await self.redis.get(self.count_key)
            self._hooks_exist = bool(count and int(count) > 0)
            self._checked_at = now
        return self._hooks_exist

    async def forward(self, batch: Batch) -> int:
        """XADD the batch's stored events (new and duplicates of stored rows); safe to repeat.

        Clicks are left out: they go once settled, with their final verdict (flusher.settling)."""
        if not batch.events or not await self.hooks_exist():
            return 0
        by_stream: dict[str, list] = {}
        for event, stream, _entry in batch.events.values():
            if event.kind not in CLICKS:
                by_stream.setdefault(self.target[stream], []).append(event)
        return await self._append(by_stream)

    async def forward_events(self, events: list[Event]) -> int:
        """XADD events to the committed stream of their profile's shard (settled clicks)."""
        if not events or not await self.hooks_exist():
            return 0
        by_stream: dict[str, list] = {}
        for event in events:
            by_stream.setdefault(committed_stream(self.prefix, shard_for(event.profile_id, self.shards)), []).append(
                event
            )
        return await self._append(by_stream)

    async def _append(self, by_stream: dict[str, list[Event]]) -> int:
        if not by_stream:
            return 0
        step = self.entry_max
        async with self.redis.pipeline(transaction=False) as pipe:
            for target, events in by_stream.items():
                for start in range(0, len(events), step):
                    pipe.xadd(target, {ENTRY_FIELD: _encode(events[start : start + step])})
            await pipe.execute()
        count = sum(len(events) for events in by_stream.values())
        self.forwarded += count
        return count

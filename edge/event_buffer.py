"""Events collected in process and written to Redis streams in micro-batches.

`add` is synchronous and cheap: the HTTP response never waits for Redis. A
batch closes on count, bytes or age and is written with one pipeline holding
one append per shard, each entry a msgpack array of the batch's events for that
shard (a failed write is spooled whole; should Redis fail between two shards'
appends, the flusher's dedupe on event ids keeps the effect exactly once). Each
append also returns its stream's length: past `stream_max_len` the edge stops
adding to Redis (the flusher is far behind) and spools instead, so tracking
traffic cannot fill Redis' memory.

While Redis is down or full, batches go to the local spool; one recovery task
probes Redis, replays spool files in order, and switches back when the spool
is drained.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from edge.spool import Spool, adopt, discard, read_offset, read_records, write_offset
from tracker.config import Settings
from tracker.contract.events import encode_batch, encode_event
from tracker.contract.keys import ENTRY_FIELD, event_streams, shard_for

log = logging.getLogger("edge.events")
_REPLAY_CHUNK = 1000
# Append one entry to a stream and say how long the stream is now.
_APPEND = "redis.call('XADD', KEYS[1], '*', ARGV[1], ARGV[2]) return redis.call('XLEN', KEYS[1])"
_RECORD_BYTES = 128  # a generous estimate of one encoded pixel or click event
_PROFILE = 4  # position of profile_id in an event record (tracker.contract.events.Event's field order)


class EventBuffer:
    def __init__(self, settings: Settings, redis: Redis, spool: Spool) -> None:
        self.redis = redis
        self.spool = spool
        self.streams = event_streams(settings.stream_prefix, settings.stream_shards)
        self.shards = settings.stream_shards
        self.max_events = settings.edge.batch_max_events
        self.max_bytes = settings.edge.batch_max_bytes
        self.max_age = settings.edge.batch_max_age_ms / 1000
        self.stream_max_len = settings.edge.stream_max_len
        self.retry_s = settings.edge.redis_retry_s
        self._pending: list[tuple] = []
        self._pending_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._write_lock = asyncio.Lock()
        self._recovery: asyncio.Task | None = None
        self._closing = False
        # "redis": batches go to the streams; "spool": Redis is down or over its bound.
        self.mode = "redis"
        self.reason = ""
        self.redis_down = False  # the last write or probe failed to reach Redis
        self.redis_errors = 0
        self.on_batch: Callable[[int, float], None] | None = None  # (events, seconds) of each stream write
        self.accepted = 0
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        self.batches = 0

    # -- hot path -------------------------------------------------------------------------

    def add(self, record: tuple, size: int = _RECORD_BYTES) -> None:
        """Queue one event: an `Event`'s fields as a plain tuple, in field order.

        Encoding waits for the flush, where one msgspec call encodes a shard's
        whole batch; `size` is the caller's estimate of the encoded bytes.
        """
        self._pending.append(record)
        self._pending_bytes += size
        self.accepted += 1
        if len(self._pending) >= self.max_events or self._pending_bytes >= self.max_bytes:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_age, self.flush)

    def flush(self) -> None:
        """Close the current batch and start writing it (in the background)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        task = asyncio.get_running_loop().create_task(self._write(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- writing --------------------------------------------------------------------------

    async def start(self) -> None:
        # Spool files left by workers that died are replayed before this one's own.
        if self.spool.path.exists() or self.spool.orphans():
            self._enter_spool_mode("spool files from an earlier run")

    async def _write(self, batch: list[tuple]) -> None:
        shards = self.shards
        by_shard: dict[int, list[tuple]] = {}
        for record in batch:
            by_shard.setdefault(shard_for(record[_PROFILE], shards), []).append(record)
        async with self._write_lock:
            if self.mode == "redis":
                try:
                    started = time.perf_counter()
                    await self._xadd({shard: encode_event(records) for shard, records in by_shard.items()})
                    self.written += len(batch)
                    if self.on_batch is not None:
                        self.on_batch(len(batch), time.perf_counter() - started)
                    return
                except (RedisError, OSError) as exc:
                    self.redis_errors += 1
                    self.redis_down = True
                    self._enter_spool_mode(f"Redis write failed: {exc!r}")
            self._to_spool([(shard, encode_event(r)) for shard, records in by_shard.items() for r in records])

    async def _xadd(self, entries: dict[int, bytes], check_bound: bool = True) -> None:
        """An XADD per shard (its batch as one msgpack array), each returning the stream's length.

        Each shard's append is one script call: atomic for that stream, one command
        instead of MULTI/XADD/XLEN/EXEC (redis-py spends more per command than Redis
        does), and each call touches one hash slot, so it also works on Redis Cluster.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard, entry in entries.items():
                # EVAL, not EVALSHA: the script is tiny, and a restarted Redis has no script cache.
                pipe.eval(_APPEND, 1, self.streams[shard], ENTRY_FIELD, entry)
            lengths = await pipe.execute()
        self.batches += 1
        longest = max(lengths)
        if check_bound and longest >= self.stream_max_len:
            self._enter_spool_mode(f"a stream holds {longest} entries (bound {self.stream_max_len})")

    def _to_spool(self, batch: list[tuple[int, bytes]]) -> None:
        dropped = self.spool.append(batch)
        self.spooled += len(batch) - dropped
        if dropped:
            log.error(
                "spool %s is full (%d bytes): %d events dropped, %d in total",
                self.spool.path, self.spool.max_bytes, dropped, self.spool.dropped,
            )  # fmt: skip

    def _enter_spool_mode(self, reason: str) -> None:
        if self.mode != "spool":
            log.warning("spooling events to %s: %s; retrying Redis every %.1fs", self.spool.path, reason, self.retry_s)
        self.mode, self.reason = "spool", reason
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.get_running_loop().create_task(self._recover())

    # -- recovery -------------------------------------------------------------------------

    async def _recover(self) -> None:
        """Probe Redis until it is back and below its bound, then replay every spool file."""
        while True:
            if not await self._redis_has_room():
                if self._closing:
                    return
                await asyncio.sleep(self.retry_s)
                continue
            try:
                for orphan in self.spool.orphans():
                    await self._replay_file(orphan, own=False)
                await self._replay_file(self.spool.path, own=True)
            except (RedisError, OSError) as exc:
                log.warning("spool replay interrupted: %r; next try in %.1fs", exc, self.retry_s)
                if self._closing:
                    return
                await asyncio.sleep(self.retry_s)
                continue
            return

    async def _redis_has_room(self) -> bool:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream in self.streams:
                    pipe.xlen(stream)
                lengths = await pipe.execute()
        except (RedisError, OSError) as exc:
            self.redis_down = True
            log.info("Redis still unreachable (%r); next try in %.1fs", exc, self.retry_s)
            return False
        self.redis_down = False
        # Hysteresis: resume only well below the bound, so the edge does not flap.
        if max(lengths) >= self.stream_max_len * 0.9:
            log.info("streams still near their bound (%d entries); next try in %.1fs", max(lengths), self.retry_s)
            return False
        return True

    async def _replay_file(self, path: Path, own: bool) -> None:
        if not own:
            # Hold the dead worker's lock while replaying, so no other worker replays it too.
            with adopt(path) as adopted:
                if adopted:
                    await self._replay_records(path)
                    discard(path)
            return
        while await self._replay_records(path):
            pass  # new batches may have been spooled while replaying
        # Caught up: switch back under the write lock so that no batch slips in between.
        async with self._write_lock:
            if await self._replay_records(path):
                return await self._replay_file(path, own)
            if read_offset(path) < self.spool.size:
                log.error("spool %s: unreadable tail of %d bytes discarded", path, self.spool.size - read_offset(path))
            self.spool.remove()
            self.mode, self.reason = "redis", ""
            log.warning("Redis is back: spool replayed (%d events in total)", self.replayed)

    async def _replay_records(self, path: Path) -> bool:
        """Replay what is readable past the saved offset; True if anything was sent."""
        if not path.exists():
            return False
        progressed = False
        for chunk, next_offset in read_records(path, read_offset(path), _REPLAY_CHUNK):
            await self._xadd_replayed(chunk)
            write_offset(path, next_offset)
            progressed = True
        return progressed

    async def _xadd_replayed(self, chunk: list[tuple[int, bytes]]) -> None:
        by_shard: dict[int, list[bytes]] = {}
        for shard, payload in chunk:
            by_shard.setdefault(shard % self.shards, []).append(payload)
        await self._xadd({shard: encode_batch(payloads) for shard, payloads in by_shard.items()}, check_bound=False)
        self.replayed += len(chunk)

    # -- shutdown -------------------------------------------------------------------------

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is buffered; whatever Redis does not take goes to the spool."""
        self._closing = True
        self.flush()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        if self._recovery is not None and not self._recovery.done():
            try:
                await asyncio.wait_for(self._recovery, timeout)
            except (TimeoutError, asyncio.CancelledError):
                pass
        self.spool.close()

    def state(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "reason": self.reason,
            "spool_bytes": self.spool.size,
            "spool_dropped": self.spool.dropped,
            "accepted": self.accepted,
            "written": self.written,
            "spooled": self.spooled,
            "replayed": self.replayed,
            "at": time.time(),
        }

"""The flusher worker: read batches from the streams, store them, then acknowledge.

Two loops joined by a small queue, so that reading and decoding the next
batch overlaps the Postgres transactions of the current ones:

    read loop:  own pending entries first, then new ones, and every so often
                entries idle too long in other consumers -> Batch -> queue
    write loop: queue -> one of FLUSHER_PG_CONNECTIONS sinks: Postgres (commit)
                -> dead-letter + XACK -> trim

Nothing is acknowledged before its batch is committed. A failure of Redis or
Postgres is retried with backoff for as long as it lasts; `close()` (SIGTERM)
stops reading, lets the batch in hand finish within the shutdown grace, and
`run()` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

import asyncpg
from redis.exceptions import ResponseError

from flusher.batch import Batch
from flusher.committed import CommittedFeed
from flusher.metrics import FlusherMetrics, MetricsPublisher
from flusher.sink import PostgresSink, Stored
from flusher.streams import DeadLetters, event_consumer, open_flusher_redis
from tracker.config import Settings
from tracker.contract.keys import flusher_heartbeat_key
from tracker.contract.snapshots import FlusherHeartbeatFacts
from tracker.streams.consumer import as_text
from tracker.streams.heartbeat import Heartbeat, default_consumer_name
from tracker.streams.retry import POSTGRES_TRANSIENT, REDIS_TRANSIENT, Retry, Stopping

log = logging.getLogger("flusher")
_POLL_MS = 500  # longest blocking read, so that close() is noticed promptly
_READ_MAX_ENTRIES = 1000
_MAINTENANCE_RETRIED = tuple(e for e in POSTGRES_TRANSIENT if e is not asyncpg.LockNotAvailableError)
_MAINTENANCE_POSTPONE_S = 60
_STATS = ("batches", "entries", "events", "stored", "duplicates", "dead_lettered", "trimmed")


class Flusher:
    def __init__(self, settings: Settings, *, burst: bool = False) -> None:
        settings.require("redis_url", "database_url")
        self.settings = settings
        self.burst = burst
        self.consumer = settings.flusher.consumer or default_consumer_name()
        self.redis = open_flusher_redis(settings)
        self.streams = event_consumer(self.redis, settings, self.consumer)
        self.dead_letters = DeadLetters(settings, self.consumer)
        self.committed = CommittedFeed(self.redis, settings)  # the action hooks' copy of what was committed
        # Several connections, each writing its own batch: Postgres works on one while
        # the other waits for a commit or on a shared row, and the loop decodes the next.
        self.sinks = [PostgresSink(settings) for _ in range(settings.flusher.pg_connections)]
        self.sink = self.sinks[0]  # maintenance
        self._closing = asyncio.Event()
        self._closing_at = 0.0
        self._queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=len(self.sinks))
        self.stats = dict.fromkeys(_STATS, 0)
        self.metrics = FlusherMetrics(self.consumer)
        self.metrics_publisher = MetricsPublisher(
            self.redis, settings.stream_prefix, self.streams.streams, self.metrics
        )
        self.heartbeat = Heartbeat(self.redis, flusher_heartbeat_key(settings.stream_prefix, self.consumer),
                                   settings.flusher.heartbeat_ttl_s, self._heartbeat_facts, log=log)  # fmt: skip
        # Redis or Postgres failures are waited out; once closing, only within the shutdown grace.
        self.retry = Retry(settings.flusher.retry_min_s, settings.flusher.retry_max_s, log=log,
                           closing=self._closed_for, grace_s=settings.flusher.shutdown_grace_s,
                           regroup=self.streams.ensure_groups)  # fmt: skip

    def close(self) -> None:
        """Ask the worker to stop (safe from a signal handler); `run()` returns when it has."""
        if not self._closing.is_set():
            log.info("stopping: finishing the batch in hand")
            self._closing_at = time.monotonic()
            self._closing.set()

    async def run(self) -> None:
        log.info("flusher %s starting on %d streams%s", self.consumer, len(self.streams.streams),
                 " (burst)" if self.burst else "")  # fmt: skip
        heartbeat = asyncio.create_task(self.heartbeat.run())
        publisher = asyncio.create_task(self.metrics_publisher.run())
        try:
            await self.retry.run("Redis: create consumer groups", self.streams.ensure_groups, REDIS_TRANSIENT)
            await self.retry.run("Postgres: maintenance", self.sink.maintain, POSTGRES_TRANSIENT,
                                 on_failure=self.sink.drop_connection)  # fmt: skip
            reader = asyncio.create_task(self._read_loop())
            try:
                await self._write_loop(reader)
            finally:
                if not reader.done():
                    reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        except Stopping:
            pass
        finally:
            for task in (heartbeat, publisher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.heartbeat.forget()
            # The final numbers, kept for the TTL; bounded so a vanished Redis cannot hold up the exit.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.metrics_publisher.publish(), 2.0)
            for sink in self.sinks:
                await sink.close()
            await self.redis.aclose()
            log.info("flusher %s stopped: %s", self.consumer, self.stats)

    # -- reading -------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        settings = self.settings
        max_events, max_bytes = settings.flusher.batch_max_events, settings.flusher.batch_max_bytes
        max_age_ms = settings.flusher.batch_max_age_ms
        claim_every = settings.flusher.claim_interval_s
        next_claim = 0.0 if self.burst else time.monotonic() + min(claim_every, settings.flusher.claim_idle_ms / 1000)
        batch = Batch()
        per_entry = 64  # events per entry, a first guess until entries are seen
        shards = len(self.streams.streams)
        try:
            while not self._closing.is_set():
                # XREADGROUP counts entries; each holds a batch of the edge's events.
                # COUNT is per stream: a read may bring up to `shards` times this many.
                room = max(1, min(_READ_MAX_ENTRIES, (max_events - len(batch)) // (per_entry * shards)))
                quiet = False  # a read came back empty: nothing more to wait for in this batch
                if time.monotonic() >= next_claim and self.streams.own_pending_done:
                    found = await self.retry.run("Redis: reclaim idle entries", lambda r=room: self.streams.reclaim(r))
                    # A dead consumer's backlog is taken over page after page, then checked again later.
                    next_claim = time.monotonic() + (0 if found else claim_every)
                    claimed = sum(len(entries) for _, entries in found)
                    if claimed:
                        idle_ms = settings.flusher.claim_idle_ms
                        log.info("took over %d entries idle for more than %d ms", claimed, idle_ms)
                else:
                    reading_new = self.streams.own_pending_done
                    block = None if self.burst else (
                        max(1, int(max_age_ms - batch.age * 1000)) if len(batch) else _POLL_MS)
                    found = await self.retry.run("Redis: read", lambda r=room, b=block: self.streams.read(r, b))
                    quiet = reading_new and not found
                for stream, entries in found:
                    batch.add(stream, entries)
                if batch.entries:
                    per_entry = max(1, len(batch) // batch.entries)
                full = len(batch) >= max_events or batch.nbytes >= max_bytes
                if len(batch) and (full or quiet or batch.age * 1000 >= max_age_ms):
                    await self._queue.put(batch)
                    batch = Batch()
                elif quiet and self.burst:
                    break
        except Stopping:
            pass
        if len(batch):
            await self._queue.put(batch)  # entries already delivered to us: finish them too
        await self._queue.put(None)

    # -- writing -------------------------------------------------------------------------

    async def _write_loop(self, reader: asyncio.Task) -> None:
        next_maintenance = time.monotonic() + self.settings.flusher.maintenance_interval_s
        idle: asyncio.Queue[PostgresSink] = asyncio.Queue()
        for sink in self.sinks:
            idle.put_nowait(sink)
        writing: set[asyncio.Task] = set()
        try:
            while (batch := await self._next_batch(reader)) is not None:
                if time.monotonic() >= next_maintenance and not self._closing.is_set():
                    next_maintenance = time.monotonic() + self.settings.flusher.maintenance_interval_s
                    # On a connection no batch is using: asyncpg runs one operation at a time.
                    spare = await idle.get()
                    try:
                        await self.retry.run("Postgres: maintenance", spare.maintain, _MAINTENANCE_RETRIED,
                                             on_failure=spare.drop_connection)  # fmt: skip
                    except asyncpg.LockNotAvailableError:
                        # Partitions are made days ahead: better later than stalling every insert now.
                        log.warning("maintenance postponed %ds: a long transaction holds the events table",
                                    _MAINTENANCE_POSTPONE_S)  # fmt: skip
                        next_maintenance = time.monotonic() + _MAINTENANCE_POSTPONE_S
                    finally:
                        idle.put_nowait(spare)
                sink = await idle.get()
                for task in [t for t in writing if t.done()]:
                    writing.discard(task)
                    task.result()  # a failure that is not transient stops the worker
                writing.add(asyncio.create_task(self._flush_with(sink, batch, idle)))
        finally:
            if writing:
                results = await asyncio.gather(*writing, return_exceptions=True)
                for result in results:
                    if isinstance(result, BaseException) and not isinstance(result, Stopping):
                        raise result

    async def _flush_with(self, sink: PostgresSink, batch: Batch, idle: asyncio.Queue[PostgresSink]) -> None:
        try:
            await self.flush_batch(batch, sink)
        finally:
            idle.put_nowait(sink)

    async def _next_batch(self, reader: asyncio.Task) -> Batch | None:
        if self._queue.empty() and not reader.done():
            waiter = asyncio.ensure_future(self._queue.get())
            await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                return waiter.result()
            waiter.cancel()
        if not self._queue.empty():
            return self._queue.get_nowait()
        reader.result()  # the read loop ended without saying so: raise what it raised
        return None

    async def flush_batch(self, batch: Batch, sink: PostgresSink | None = None) -> None:
        """Commit the batch to Postgres, then dead-letter its faults and acknowledge it all."""
        sink = sink or self.sink

        async def store() -> Stored:
            started = time.perf_counter()
            stored = await sink.store(batch)
            # Only attempts that committed: a failed try's time is the retry's story, not the commit's.
            self.metrics.observe_commit(time.perf_counter() - started)
            return stored

        stored = await self.retry.run(f"Postgres: store a batch of {len(batch)}", store,
                                      POSTGRES_TRANSIENT, on_failure=sink.drop_connection)  # fmt: skip
        # Action hooks see committed events only: copied to the committed streams before the XACK.
        await self.retry.run("Redis: forward to hooks", lambda: self.committed.forward(batch))
        await self.retry.run("Redis: acknowledge", lambda: self._acknowledge(batch))
        for fault in batch.faults:
            log.warning("dead-lettered %s %s: %s", fault.stream, as_text(fault.entry_id), fault.reason)
        stats = self.stats
        stats["batches"] += 1
        stats["entries"] += batch.entries
        stats["events"] += len(batch)
        stats["stored"] += stored.new
        stats["duplicates"] += stored.duplicates
        stats["dead_lettered"] += len(batch.faults)
        self.metrics.batch_done(stored.new, stored.duplicates, len(batch.faults))
        try:
            stats["trimmed"] += await self.streams.trim(list(batch.acks))
        except (*REDIS_TRANSIENT, ResponseError) as exc:
            # Trimming is caught up by the next batch; not worth holding the loop for.
            log.warning("trimming failed (%r); the next batch trims again", exc)

    async def _acknowledge(self, batch: Batch) -> None:
        """Dead-letter the faults and acknowledge every entry, in one MULTI/EXEC."""
        await self.streams.acknowledge(batch.acks, transaction=True,
                                       before=lambda pipe: self.dead_letters.add(pipe, batch.faults))  # fmt: skip

    # -- support -------------------------------------------------------------------------

    def _closed_for(self) -> float | None:
        return time.monotonic() - self._closing_at if self._closing.is_set() else None

    def _heartbeat_facts(self) -> FlusherHeartbeatFacts:
        return FlusherHeartbeatFacts(consumer=self.consumer, pid=os.getpid(), at=time.time(), **self.stats)

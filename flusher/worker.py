"""The flusher worker: read batches from the streams, store them, then acknowledge.

Two loops joined by a small queue, so that reading and decoding the next
batch overlaps the Postgres transactions of the current ones:

    read loop:  own pending entries first, then new ones, and every so often
                entries idle too long in other consumers -> Batch -> queue
    write loop: queue -> one of FLUSHER_PG_CONNECTIONS sinks: Postgres (commit)
                -> dead-letter + XACK -> trim

Nothing is acknowledged before its batch is committed. An operational failure
of Redis or Postgres (tracker.streams.retry: down, full, read-only, refusing
connections) is retried with backoff for as long as it lasts, logged once when
it starts and once when it ends. Any other failure ends `run()` with it, after
the other batches in hand got the shutdown grace to finish: a fatal one (bad
credentials, no schema) makes the program exit non-zero.

The heartbeat follows progress: with batches in hand and no commit for a
heartbeat TTL it lapses, so `flusher --check` fails.

When Redis is at maxmemory it still drains: XACK outside MULTI/EXEC, groups
found with XINFO when XGROUP CREATE is refused, the heartbeat kept with EXPIRE,
and writes that need memory (the hooks' copy, dead letters) retried, trimming
what is acknowledged between tries, which frees memory.

`close()` (SIGTERM) stops reading, lets the batches in hand finish within the
shutdown grace, and `run()` returns; every wait of the shutdown is bounded.

Longer than most modules: the two loops, their hand-over, the start and the
bounded shutdown decide together when the worker stops, and read best side by
side.
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
from flusher.groupless import GrouplessDrain
from flusher.judging import Judge
from flusher.metrics import FlusherMetrics, MetricsPublisher, stop_summary
from flusher.settling import SETTLE_BATCH, Settler
from flusher.sink import PostgresSink, Stored
from flusher.streams import DeadLetters, event_consumer, open_flusher_redis
from tracker.config import Settings
from tracker.contract.keys import flusher_heartbeat_key
from tracker.contract.snapshots import FlusherHeartbeatFacts
from tracker.domain.analytics.active_days import ActiveDays
from tracker.streams.consumer import as_text
from tracker.streams.heartbeat import Heartbeat, Progress, default_consumer_name
from tracker.streams.retry import (
    POSTGRES_TRANSIENT,
    REDIS_TRANSIENT,
    Outage,
    Retry,
    Stopping,
    error_text,
    is_operational,
    is_out_of_memory,
)
from tracker.streams.tasks import bounded, stop_tasks

log = logging.getLogger("flusher")
_POLL_MS = 500  # longest blocking read, so that close() is noticed promptly
_READ_MAX_ENTRIES = 1000
_MAINTENANCE_POSTPONE_S = 60
# Past the shutdown grace, what a call stuck in Redis or Postgres gets before it is left behind.
_SHUTDOWN_MARGIN_S = 3.0
_CLOSE_TIMEOUT_S = 2.0
_STATS = ("batches", "entries", "events", "stored", "duplicates", "dead_lettered", "trimmed", "settled")
_SETTLE_EVERY_S = 1.0
_SETTLE_TRANSIENT = (*POSTGRES_TRANSIENT, *REDIS_TRANSIENT)  # the pass writes both


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
        self.judge = Judge(settings)  # one network list and honeypot cache for every connection
        days = ActiveDays()  # which day rows are stored: one memory for every connection
        self.metrics = FlusherMetrics(self.consumer)
        self.sinks = [PostgresSink(settings, self.judge, days, steps=self.metrics.steps)
                      for _ in range(settings.flusher.pg_connections)]  # fmt: skip
        self.settler = Settler(settings, self.committed)
        self.sink = self.sinks[0]  # maintenance
        self._closing = asyncio.Event()
        self._closing_at = 0.0
        self._queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=len(self.sinks))
        self._settling: asyncio.Task | None = None
        self._settle_stop = asyncio.Event()
        self._writers_gone = asyncio.Event()  # the write loop ended: nothing more is taken from the queue
        # Batches queued or being written, and when one last got on: what the heartbeat follows.
        self.progress = Progress()
        self._trimming = Outage(log, "Redis: trim the streams")
        self.stats = dict.fromkeys(_STATS, 0)
        self.metrics.verdicts = self.judge.counts
        self.metrics_publisher = MetricsPublisher(
            self.redis, settings.stream_prefix, self.streams.streams, self.metrics
        )
        self.heartbeat = Heartbeat(self.redis, flusher_heartbeat_key(settings.stream_prefix, self.consumer),
                                   settings.flusher.heartbeat_ttl_s, self._heartbeat_facts,
                                   stalled_for=self.progress.stalled_for, log=log)  # fmt: skip
        # Redis or Postgres failures are waited out; once closing, only within the shutdown grace.
        self.retry = Retry(settings.flusher.retry_min_s, settings.flusher.retry_max_s, log=log,
                           closing=self._closed_for, grace_s=settings.flusher.shutdown_grace_s,
                           regroup=self.streams.ensure_groups, probe=self.redis.ping)  # fmt: skip
        # Room for the group when Redis is full and it does not exist yet (flusher.groupless).
        self.groupless = GrouplessDrain(self.redis, self.streams, self._flush_groupless, self.retry,
                                        min(_READ_MAX_ENTRIES, max(1, settings.flusher.batch_max_events // 100)))

    def close(self) -> None:
        """Ask the worker to stop (safe from a signal handler); `run()` returns when it has."""
        if not self._closing.is_set():
            log.info("stopping: finishing the batch in hand")
            self._begin_closing()

    def _begin_closing(self) -> None:
        if not self._closing.is_set():
            self._closing_at = time.monotonic()
            self._closing.set()

    async def run(self) -> None:
        """Until closed (or drained, in burst mode); raises what is not operational (after a bounded clean-up)."""
        log.debug("flusher %s starting on %d streams%s", self.consumer, len(self.streams.streams),
                 " (burst)" if self.burst else "")  # fmt: skip
        helpers: list[asyncio.Task] = []
        reader: asyncio.Task | None = None
        try:
            # Bad credentials end it here, before anything else tries Redis.
            await self.retry.run("Redis: connect", self.redis.ping)
            helpers = [asyncio.create_task(self.heartbeat.run()), asyncio.create_task(self.metrics_publisher.run())]
            await self._start()
            reader = asyncio.create_task(self._read_loop())
            await self._write_loop(reader)
        except Stopping:
            pass
        finally:
            # Also after a failure: the reader and every retry stop, within the grace at most.
            self._begin_closing()
            self._writers_gone.set()
            await stop_tasks([reader] if reader else [], self._shutdown_left(), what="read loop", log=log,
                             cancel=False)  # fmt: skip
            await stop_tasks(helpers, _CLOSE_TIMEOUT_S, what="heartbeat and metrics tasks", log=log)
            await self.heartbeat.forget(timeout_s=_CLOSE_TIMEOUT_S)
            if helpers:  # the final numbers, kept for the TTL; bounded so a vanished Redis cannot hold up the exit
                with contextlib.suppress(Exception):
                    await bounded(self.metrics_publisher.publish(), _CLOSE_TIMEOUT_S)
            for sink in self.sinks:
                with contextlib.suppress(Exception):
                    await bounded(sink.close(), _CLOSE_TIMEOUT_S + 1)
            with contextlib.suppress(Exception):
                await bounded(self.redis.aclose(), _CLOSE_TIMEOUT_S)
            log.info("%s", stop_summary(self.consumer, self.stats))

    async def _start(self) -> None:
        async def make_groups() -> None:
            # When Redis is full a group that exists is found with XINFO; one that does not is made room for.
            while True:
                try:
                    return await self.streams.ensure_groups()
                except ResponseError as exc:
                    if not is_out_of_memory(exc) or not await self.groupless.drain():
                        raise

        await self.retry.run("Redis: create consumer groups", make_groups, REDIS_TRANSIENT)
        await self._housekeeping()
        # Start-up is work in hand: a database that refuses the first maintenance holds back every batch behind
        # it, so the heartbeat must lapse as it does for a batch that cannot be committed.
        self.progress.took()
        try:
            await self.retry.run("Postgres: maintenance", self.sink.maintain, POSTGRES_TRANSIENT,
                                 on_failure=self.sink.drop_connection)  # fmt: skip
        finally:
            self.progress.done()

    async def _housekeeping(self) -> None:
        """At start: remove dead consumers and trim what earlier runs acknowledged; neither may hold up the start."""
        try:
            await self.streams.forget_dead_consumers()
            await self.streams.trim(self.streams.streams)
        except Exception as exc:
            if not is_operational(exc):
                raise
            log.info("start-up housekeeping skipped (%s); the reclaim passes and batches do it later", error_text(exc))

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
                    if not await self._hand_over(batch):
                        return
                    batch = Batch()
                elif quiet and self.burst:
                    break
        except Stopping:
            pass
        if len(batch) and not await self._hand_over(batch):  # entries already delivered to us: finish them too
            return
        await self._hand_over(None)

    async def _hand_over(self, batch: Batch | None) -> bool:
        """Queue `batch` for the writers; False when they are gone (its entries stay pending in the group)."""
        if self._writers_gone.is_set():
            return False
        if batch is not None:
            self.progress.took()
        put = asyncio.ensure_future(self._queue.put(batch))
        gone = asyncio.ensure_future(self._writers_gone.wait())
        try:
            await asyncio.wait({put, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not put.done():
                put.cancel()
        if put.done() and not put.cancelled():
            return True
        if batch is not None:
            self.progress.done()
        return False

    # -- writing -------------------------------------------------------------------------

    async def _write_loop(self, reader: asyncio.Task) -> None:
        next_maintenance = time.monotonic() + self.settings.flusher.maintenance_interval_s
        idle: asyncio.Queue[PostgresSink] = asyncio.Queue()
        for sink in self.sinks:
            idle.put_nowait(sink)
        writing: set[asyncio.Task] = set()
        # Clicks come due while no batch arrives too: their own task, on a connection no batch is using.
        self._settle_stop = asyncio.Event()
        self._settling = asyncio.create_task(self._settle_loop(idle, self._settle_stop))
        try:
            while (batch := await self._next_batch(reader, writing)) is not None:
                if time.monotonic() >= next_maintenance and not self._closing.is_set():
                    next_maintenance = time.monotonic() + self.settings.flusher.maintenance_interval_s
                    # On a connection no batch is using: asyncpg runs one operation at a time.
                    spare = await idle.get()
                    try:
                        if not await self.retry.run("Postgres: maintenance", lambda s=spare: self._maintain(s),
                                                    POSTGRES_TRANSIENT, on_failure=spare.drop_connection):  # fmt: skip
                            next_maintenance = time.monotonic() + _MAINTENANCE_POSTPONE_S
                    finally:
                        idle.put_nowait(spare)
                sink = await idle.get()
                _reap(writing)  # a writer's failure that is not operational stops the worker
                writing.add(asyncio.create_task(self._flush_with(sink, batch, idle)))
        except BaseException:
            self._begin_closing()  # the other batches get the grace, the reader stops
            await self._finish_writers(writing)
            await self._stop_settling()
            raise
        failure = await self._finish_writers(writing)
        failure = await self._stop_settling() or failure
        if failure is None:
            # Drained or closing: settle what is due already (with a zero window: every click stored),
            # within what is left of the grace; what is not done waits in Postgres for the next flusher.
            await self._settle_due(idle)
        if failure is not None:
            raise failure

    async def _settle_loop(self, idle: asyncio.Queue[PostgresSink], stop: asyncio.Event) -> None:
        while not (stop.is_set() or self._closing.is_set()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _SETTLE_EVERY_S)
            if stop.is_set() or self._closing.is_set():
                return
            await self._settle_due(idle)

    async def _settle_due(self, idle: asyncio.Queue[PostgresSink]) -> None:
        sink = await idle.get()
        try:
            async def one_pass() -> int:
                return await self.settler.settle(await sink.connect())

            while True:
                taken = await self.retry.run("Postgres: settle clicks", one_pass, _SETTLE_TRANSIENT,
                                             on_failure=sink.drop_connection)  # fmt: skip
                self.stats["settled"] += taken
                if taken < SETTLE_BATCH:
                    return
        except Stopping:
            return
        finally:
            idle.put_nowait(sink)

    async def _stop_settling(self) -> BaseException | None:
        task = self._settling
        if task is None:
            return None
        self._settling = None
        self._settle_stop.set()
        await stop_tasks([task], self._shutdown_left(), what="settle pass", log=log, cancel=False)
        if task.done() and not task.cancelled() and task.exception() is not None:
            return task.exception()
        return None

    async def _maintain(self, sink: PostgresSink) -> bool:
        """Partitions and clean-up; False when postponed (a long transaction holds the events table)."""
        try:
            await sink.maintain()
        except asyncpg.LockNotAvailableError:
            # Partitions are made days ahead: better later than stalling every insert now.
            log.warning("maintenance postponed %ds: a long transaction holds the events table", _MAINTENANCE_POSTPONE_S)
            return False
        return True

    async def _finish_writers(self, writing: set[asyncio.Task]) -> BaseException | None:
        """Wait for the batches being written (once closing: for what is left of the grace, then leave them).

        Returns the first failure that is not operational (Stopping: the grace ran out, not a failure).
        """
        pending = set(writing)
        while pending and not self._closing.is_set():
            closing = asyncio.ensure_future(self._closing.wait())
            done, pending = await asyncio.wait({*pending, closing}, return_when=asyncio.FIRST_COMPLETED)
            closing.cancel()
            pending.discard(closing)
            if any(not task.cancelled() and task.exception() is not None for task in done - {closing}):
                self._begin_closing()  # one failed for good: the others get the grace, no more
        if pending:
            await stop_tasks(pending, self._shutdown_left(), what="batch writers", log=log, cancel=False)
        for task in writing:
            if task.done() and not task.cancelled():
                failure = task.exception()
                if failure is not None and not isinstance(failure, Stopping):
                    return failure
        return None

    async def _flush_with(self, sink: PostgresSink, batch: Batch, idle: asyncio.Queue[PostgresSink]) -> None:
        try:
            await self.flush_batch(batch, sink)
        finally:
            self.progress.done()
            idle.put_nowait(sink)

    async def _next_batch(self, reader: asyncio.Task, writing: set[asyncio.Task]) -> Batch | None:
        """The next batch of the reader, None once it is done; a writer (or the settle pass) failing is raised."""
        while True:
            _reap(writing)
            if self._settling is not None and self._settling.done():
                self._settling.result()
            if not self._queue.empty():
                return self._queue.get_nowait()
            if reader.done():
                reader.result()  # the read loop ended without saying so: raise what it raised
                return None
            waiter = asyncio.ensure_future(self._queue.get())
            watched = {waiter, reader, *writing, *([self._settling] if self._settling is not None else [])}
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                return waiter.result()
            waiter.cancel()

    async def _flush_groupless(self, batch: Batch) -> None:
        self.progress.took()
        try:
            await self.flush_batch(batch, acknowledge=False)
        finally:
            self.progress.done()

    async def flush_batch(self, batch: Batch, sink: PostgresSink | None = None, *, acknowledge: bool = True) -> None:
        """Commit the batch to Postgres, then dead-letter its faults and acknowledge it all (and trim)."""
        sink = sink or self.sink

        async def store() -> Stored:
            started = time.perf_counter()
            stored = await sink.store(batch)
            # Only attempts that committed: a failed try's time is the retry's story, not the commit's.
            self.metrics.observe_commit(time.perf_counter() - started)
            return stored

        # A failure drops the connection: the next try starts afresh (and a database made read-only
        # and back again is seen as it is now, not as the session was opened).
        stored = await self.retry.run(f"Postgres: store a batch of {len(batch)}", store,
                                      POSTGRES_TRANSIENT, on_failure=sink.drop_connection)  # fmt: skip
        self.progress.moved()
        # Action hooks see committed events only: copied to the committed streams before the XACK. Never
        # skipped, also when Redis is full: what is acknowledged is trimmed between tries, to make room.
        await self.retry.run("Redis: forward to hooks", lambda: self.committed.forward(batch),
                             on_failure=self._make_room)  # fmt: skip
        if batch.faults:
            await self.retry.run("Redis: dead-letter", lambda: self.dead_letters.write(self.redis, batch.faults),
                                 on_failure=self._make_room)  # fmt: skip
        if acknowledge:  # plain XACKs (no MULTI/EXEC): a full Redis still takes them
            await self.retry.run("Redis: acknowledge", lambda: self.streams.acknowledge(batch.acks))
        self.progress.moved()
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
        if not acknowledge:
            return
        try:
            stats["trimmed"] += await self.streams.trim(list(batch.acks))
        except Exception as exc:
            if not is_operational(exc):
                raise
            # Trimming is caught up by the next batch (or between tries of a write Redis refuses).
            self._trimming.failed(exc, "the next batch trims again")
        else:
            self._trimming.recovered()

    async def _make_room(self) -> None:
        """Between tries of a write Redis refused: trim what is acknowledged already (when full, it frees memory)."""
        trimmed = await self.streams.trim(self.streams.streams)
        self.stats["trimmed"] += trimmed

    # -- support -------------------------------------------------------------------------

    def _closed_for(self) -> float | None:
        return time.monotonic() - self._closing_at if self._closing.is_set() else None

    def _shutdown_left(self) -> float:
        """Seconds left of the shutdown grace and its margin (the full allowance while not closing)."""
        allowance = self.settings.flusher.shutdown_grace_s + _SHUTDOWN_MARGIN_S
        closed_for = self._closed_for()
        return max(0.0, allowance - (closed_for or 0.0))

    def _heartbeat_facts(self) -> FlusherHeartbeatFacts:
        return FlusherHeartbeatFacts(consumer=self.consumer, pid=os.getpid(), at=time.time(), **self.stats)


def _reap(writing: set[asyncio.Task]) -> None:
    """Forget the writers that are done; raise the failure of one that failed (Stopping included)."""
    for task in [task for task in writing if task.done()]:
        writing.discard(task)
        task.result()

"""The Postgres sink: one transaction per batch (COPY, insert with dedupe, effects).

A batch goes through named steps, each timed (`StepTimes`, on /metrics and in `tracker stats`):

    check_messages  redeliveries  partitions  judge  rows            (before the transaction)
    copy  insert  settle_queue  recipient_firsts  profile_effects
    message_counters  rollups  verdict_changes  active_days  commit   (the transaction)

The effects' steps and their lock order are flusher.effects.effects_steps.

`store(batch)` either commits the whole batch or raises with nothing committed
(an operational error, to be retried; or a fatal one, a missing schema or
privilege, that stops the flusher), so the caller may acknowledge exactly when
it returns. An event Postgres turns down for its content is found by splitting
the batch and handed back as a fault; the rest is stored.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import asyncpg
import msgspec

from flusher import effects, partitions
from flusher.batch import Batch
from flusher.judging import Judge
from flusher.metrics import StepTimes
from tracker.config import Settings
from tracker.contract.events import TIMELESS_ID_PREFIX, Event, encode_event
from tracker.domain.analytics import active_days
from tracker.domain.verdict_store import Change, change_verdicts, micros, moment
from tracker.domain.verdicts import CLICKS
from tracker.streams.retry import POSTGRES_FATAL, POSTGRES_TRANSIENT

log = logging.getLogger("flusher.sink")
_json = msgspec.json.Encoder()
_KNOWN_MESSAGES_MAX = 200_000
_REDELIVERY_WINDOW_US = 3 * 86_400 * 1_000_000  # how far apart a provider's redeliveries may arrive


@dataclass(slots=True)
class Stored:
    new: int = 0
    duplicates: int = 0  # already in Postgres (a retry or a replay)


class PostgresSink:
    def __init__(
        self,
        settings: Settings,
        judge: Judge | None = None,
        days: active_days.ActiveDays | None = None,
        *,
        with_rollups: bool = True,
        steps: StepTimes | None = None,
    ) -> None:
        """`judge`, `days` and `steps` are shared by a flusher's sinks (one memory of stored day rows,
        learnt once; one sum of each step's time)."""
        self.settings = settings
        self.judge = judge or Judge(settings)
        self.steps = steps or StepTimes()
        self.conn: asyncpg.Connection | None = None
        self._effects = effects.effects_steps(settings, with_rollups=with_rollups)
        self._active_days = (days or active_days.ActiveDays()) if with_rollups else None
        # Messages are never re-numbered, so a message seen once is known for good.
        self._known_messages: set[int] = set()
        self._days: set[dt.date] = set()

    async def connect(self) -> asyncpg.Connection:
        if self.conn is not None and not self.conn.is_closed():
            return self.conn
        self.conn = None
        server_settings = {"application_name": "flusher"}
        if not self.settings.flusher.synchronous_commit:
            server_settings["synchronous_commit"] = "off"
        conn = await asyncpg.connect(self.settings.database_url, server_settings=server_settings, timeout=10)
        try:
            # Event ids travel as their 16 raw bytes: no uuid.UUID object per row.
            await conn.set_type_codec(
                "uuid", schema="pg_catalog", encoder=bytes, decoder=bytes, format="binary"
            )
            await conn.execute(effects.SETUP)
            self._days = await partitions.existing_days(conn)
            if self._active_days is not None:
                await self._active_days.learn_today(conn)
        except BaseException:
            conn.terminate()
            raise
        self.conn = conn
        return conn

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=2)
            except Exception:
                conn.terminate()

    def drop_connection(self) -> None:
        """After a failure the connection's state is unknown: start the next try afresh."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.terminate()

    # -- maintenance ---------------------------------------------------------------------

    async def maintain(self, today: dt.date | None = None) -> None:
        """Create partitions ahead, drop those past retention, forget old soft bounces."""
        conn = await self.connect()
        today = today or dt.datetime.now(dt.UTC).date()
        ahead = self.settings.flusher.partitions_ahead_days
        await partitions.create_days(conn, [today + dt.timedelta(days=n) for n in range(-1, ahead + 1)])
        retention = self.settings.flusher.retention_days
        if retention:
            await partitions.drop_before(conn, today - dt.timedelta(days=retention))
        # A soft bounce older than the window (and a day of slack for late events) can no longer count.
        await conn.execute(
            "delete from email_soft_bounces where ts < now() - $1 * interval '1 second' - interval '1 day'",
            float(self.settings.flusher.soft_bounce_window_s),
        )
        self._days = await partitions.existing_days(conn)

    # -- storing -------------------------------------------------------------------------

    async def store(self, batch: Batch) -> Stored:
        conn = await self.connect()
        step = self.steps.step
        with step("check_messages"):
            await self._check_messages(conn, batch)
            self._check_times(batch)
        with step("redeliveries"):
            await self._drop_redeliveries(conn, batch)
        events = [event for event, _stream, _entry in batch.events.values()]
        if not events:
            return Stored(duplicates=batch.duplicates)
        with step("partitions"):
            await self._ensure_days(conn, events)
        # Judged before the transaction (it only reads). The verdicts are set on the batch's own events,
        # which the action hooks receive.
        with step("judge"):
            changes = await self.judge.judge(conn, events)
        stored = await self._store_splitting(conn, batch, events, changes)
        stored.duplicates += batch.duplicates
        return stored

    async def _store_splitting(
        self, conn: asyncpg.Connection, batch: Batch, events: list[Event], changes: list[Change]
    ) -> Stored:
        try:
            new = await self._store_events(conn, events, changes)
            return Stored(new=new, duplicates=len(events) - new)
        except (*POSTGRES_TRANSIENT, *POSTGRES_FATAL):
            raise  # not the events' fault: retried, or the end of the flusher, never dead letters
        except asyncpg.PostgresError as exc:
            if len(events) == 1:
                batch.reject(events[0].id, f"postgres refused it: {exc.__class__.__name__}: {exc}")
                return Stored()
            log.warning("postgres refused a batch of %d (%s); splitting it to find the bad events", len(events), exc)
        half = len(events) // 2
        first = await self._store_splitting(conn, batch, events[:half], changes)
        second = await self._store_splitting(conn, batch, events[half:], changes)
        return Stored(first.new + second.new, first.duplicates + second.duplicates)

    async def _store_events(self, conn: asyncpg.Connection, events: list[Event], changes: list[Change]) -> int:
        with self.steps.step("rows"):
            records, days = self._rows(events)
        try:
            new = await self._write(conn, events, changes, records, days)
        except BaseException:
            if days:
                self._active_days.released(days)
            raise
        if days:
            self._active_days.stored(days)
        return new

    def _rows(self, events: list[Event]) -> tuple[list[tuple], list[tuple[int, int]]]:
        """The COPY's rows, and the day rows this batch takes (tracker.domain.analytics.active_days)."""
        records = [
            (e.id, e.ts_us, e.kind, e.channel, e.message_id, e.profile_id, e.link_version, e.link_index,
             e.ua_class, e.ip_prefix, None if e.data is None else _json.encode(e.data).decode(),
             e.signals, e.ua_family, e.verdict or "unknown", ",".join(e.reasons),
             # Clicks wait in settling_clicks, whence they go to the action hooks as they are.
             encode_event(e) if e.kind in CLICKS else None)
            for e in events
        ]  # fmt: skip
        # From every event, duplicates included: a duplicate's day is stored already (its first copy's).
        return records, self._active_days.take(events) if self._active_days else []

    async def _write(
        self, conn: asyncpg.Connection, events: list[Event], changes: list[Change], records: list, days: list
    ) -> int:
        step = self.steps.step
        async with conn.transaction():
            with step("copy"):
                await conn.copy_records_to_table("flush_staging", records=records, columns=effects.STAGING_COLUMNS)
            with step("insert"):
                new = await _insert(conn, _one_day_partition(events), len(records))
            if new:
                for name, sql in self._effects:
                    with step(name):
                        await conn.execute(sql)
            # Earlier clicks a new burst or honeypot fetch shows to be a machine's (harmless to repeat).
            with step("verdict_changes"):
                await change_verdicts(conn, changes)
            # Last: another flusher reading the same shards meets the same (profile, day) rows, and an
            # insert meeting a row another transaction inserted waits for its end. Sent last, a row is
            # held only while its batch commits: with two flushers this insert was a third of their
            # time, waiting, when it came first (docs/flusher-projections.md). Every lock this batch
            # waits on here is held by a batch past all its other steps, so the wait is never a cycle.
            if days:
                with step("active_days"):
                    await conn.execute(active_days.INSERT, *active_days.as_arrays(days))
            committing = time.perf_counter()
        self.steps.seconds["commit"] += time.perf_counter() - committing
        return new

    async def _check_messages(self, conn: asyncpg.Connection, batch: Batch) -> None:
        unknown = {event[0].message_id for event in batch.events.values()} - self._known_messages - {0}
        if not unknown:
            return
        rows = await conn.fetch("select id from messages where id = any($1::bigint[])", list(unknown))
        if len(self._known_messages) > _KNOWN_MESSAGES_MAX:
            self._known_messages.clear()
        found = {row["id"] for row in rows}
        self._known_messages |= found
        missing = unknown - found
        if missing:
            for event_id in [eid for eid, found in batch.events.items() if found[0].message_id in missing]:
                batch.reject(event_id, f"message {batch.events[event_id][0].message_id} does not exist")

    async def _drop_redeliveries(self, conn: asyncpg.Connection, batch: Batch) -> None:
        """Reports stored at their arrival time (no provider time) come again at another time:
        found by id across a few days, they are duplicates. The same id at the same time is
        this batch again (a retry after a crash), which the insert dedupes as usual."""
        timeless = [found[0] for eid, found in batch.events.items() if eid[:6] == TIMELESS_ID_PREFIX]
        if not timeless:
            return
        slack = _REDELIVERY_WINDOW_US
        low, high = min(e.ts_us for e in timeless) - slack, max(e.ts_us for e in timeless) + slack
        rows = await conn.fetch(
            "select id, ts from events where id = any($1::uuid[]) and ts >= $2 and ts <= $3",
            [e.id for e in timeless], moment(low), moment(high),
        )  # fmt: skip
        for row in rows:
            found = batch.events.get(row["id"])
            if found is not None and found[0].ts_us != micros(row["ts"]):
                batch.drop_duplicate(row["id"])

    def _check_times(self, batch: Batch) -> None:
        now_us = time.time_ns() // 1000
        retention = self.settings.flusher.retention_days
        lowest = now_us - retention * partitions.US_PER_DAY if retention else 0
        # Today's partition and `ahead` more exist; further than that is a wrong clock.
        highest = now_us + self.settings.flusher.partitions_ahead_days * partitions.US_PER_DAY
        bad = [eid for eid, found in batch.events.items() if not lowest <= found[0].ts_us <= highest]
        for event_id in bad:
            event = batch.events[event_id][0]
            when = dt.datetime.fromtimestamp(event.ts_us / 1e6, dt.UTC) if event.ts_us > 0 else event.ts_us
            batch.reject(event_id, f"time {when} is outside the stored range (retention or future)")

    async def _ensure_days(self, conn: asyncpg.Connection, events: list[Event]) -> None:
        lo = min(event.ts_us for event in events)
        hi = max(event.ts_us for event in events)
        first, last = partitions.day_of(lo), partitions.day_of(hi)
        days = {first + dt.timedelta(days=n) for n in range((last - first).days + 1)}
        if days - self._days:
            # Only the days that have events; a wide spread does not create every day in between.
            needed = {partitions.day_of(event.ts_us) for event in events} - self._days
            await partitions.create_days(conn, needed)
            self._days |= needed


async def _insert(conn: asyncpg.Connection, partition: str | None, count: int) -> int:
    """Insert the staged batch into `events` and `flush_new`; returns how many events were new."""
    try:
        await conn.execute(effects.insert_all(partition))
        return count
    except asyncpg.UniqueViolationError:
        # Some of the batch is stored already: dedupe it row by row (only such batches pay for that).
        await conn.execute(effects.FAST_FAILED)
    status = await conn.execute(effects.insert_new(partition))
    return int(status.rsplit(" ", 1)[-1])


def _one_day_partition(events: list[Event]) -> str | None:
    first = partitions.day_of(min(event.ts_us for event in events))
    last = partitions.day_of(max(event.ts_us for event in events))
    return partitions.partition_name(first) if first == last else None

"""Daily partitions of the events table: created ahead and on demand, dropped past retention.

Days are UTC days. DDL runs in its own short transaction under an advisory
lock, so flushers starting together do not race to create the same table, and
a batch transaction never holds a lock on the parent table. It waits at most
LOCK_TIMEOUT_MS for the table, so a long reader never stalls the inserts.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable

import asyncpg

log = logging.getLogger("flusher.partitions")
_LOCK_ID = 0x7472_6B70  # "trkp"
LOCK_TIMEOUT_MS = 300
_NAME = re.compile(r"^events_(\d{8})$")
US_PER_DAY = 86_400_000_000
EPOCH = dt.date(1970, 1, 1)


def partition_name(day: dt.date) -> str:
    return f"events_{day:%Y%m%d}"


def day_of(ts_us: int) -> dt.date:
    return EPOCH + dt.timedelta(days=ts_us // US_PER_DAY)


async def existing_days(conn: asyncpg.Connection) -> set[dt.date]:
    rows = await conn.fetch(
        "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
        " where i.inhparent = 'events'::regclass"
    )
    days = set()
    for row in rows:
        match = _NAME.match(row["relname"])
        if match:
            days.add(dt.datetime.strptime(match.group(1), "%Y%m%d").date())
    return days


async def create_days(conn: asyncpg.Connection, days: Iterable[dt.date]) -> list[dt.date]:
    """Create the partitions of `days` that are missing; return the ones created now."""
    created = []
    async with conn.transaction():
        await _short_lock_waits(conn)
        await conn.execute("select pg_advisory_xact_lock($1)", _LOCK_ID)
        have = await existing_days(conn)
        for day in sorted(set(days) - have):
            start = dt.datetime.combine(day, dt.time(), dt.UTC)
            end = start + dt.timedelta(days=1)
            await conn.execute(
                f"create table {partition_name(day)} partition of events"
                f" for values from ('{start.isoformat()}') to ('{end.isoformat()}')"
            )
            created.append(day)
    if created:
        log.debug("created events partitions %s", ", ".join(partition_name(d) for d in created))
    return created


async def drop_before(conn: asyncpg.Connection, first_kept: dt.date) -> list[dt.date]:
    """Drop the partitions of days before `first_kept`; return the days dropped."""
    dropped = []
    async with conn.transaction():
        await _short_lock_waits(conn)
        await conn.execute("select pg_advisory_xact_lock($1)", _LOCK_ID)
        for day in sorted(await existing_days(conn)):
            if day < first_kept:
                await conn.execute(f"drop table {partition_name(day)}")
                dropped.append(day)
    if dropped:
        log.info("dropped events partitions %s (retention)", ", ".join(partition_name(d) for d in dropped))
    return dropped


async def _short_lock_waits(conn: asyncpg.Connection) -> None:
    # Attaching or dropping a partition needs the events table to itself. While it waits for a
    # long reader (a replay's cursor, a report) every insert queues behind it, so it gives up
    # quickly (LockNotAvailableError) and is tried again later instead.
    await conn.execute(f"set local lock_timeout = '{LOCK_TIMEOUT_MS}ms'")

"""Daily partitions: created ahead, dropped past retention, and maintenance while batches flow."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest

from flusher.partitions import create_days, existing_days
from flusher.worker import Flusher
from tests.conftest import fresh_database
from tests.rigs.flusher_helpers import (
    event,
    flusher_settings,
    make_message,
    make_profiles,
    push,
    stored_ids,
    wait_until,
)


@pytest.fixture
async def own_pg(pg_admin_url: str) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A database of its own: these tests drop partitions, which no other test may see."""
    async with fresh_database(pg_admin_url, "trk_parts_") as url:
        conn = await asyncpg.connect(url)
        try:
            yield url, conn
        finally:
            await conn.close()


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


async def test_maintenance_creates_days_ahead_and_drops_days_past_retention(settings, redis, own_pg):
    url, pg = own_pg
    old, kept = today() - dt.timedelta(days=40), today() - dt.timedelta(days=20)
    assert await create_days(pg, [old, kept, old]) == sorted([old, kept])
    assert await create_days(pg, [old]) == []  # already there

    settings = flusher_settings(settings.replace(database_url=url), retention_days=30, partitions_ahead_days=3)
    flusher = Flusher(settings, burst=True)
    try:
        await flusher.sink.maintain()
    finally:
        await flusher.sink.close()
        await flusher.redis.aclose()

    days = await existing_days(pg)
    assert old not in days
    assert kept in days
    assert {today() + dt.timedelta(days=n) for n in range(-1, 4)} <= days


async def test_maintenance_runs_while_batches_flow_on_a_single_connection(settings, redis, own_pg, caplog):
    """Maintenance borrows a connection no batch is using (asyncpg runs one operation at a time)."""
    url, pg = own_pg
    (profile,) = await make_profiles(pg, 1)
    message = await make_message(pg)
    settings = flusher_settings(
        settings.replace(database_url=url), pg_connections=1, maintenance_interval_s=1.0, retention_days=30,
        batch_max_events=50,
    )  # fmt: skip
    flusher = Flusher(settings)
    caplog.set_level(logging.INFO)
    running = asyncio.create_task(flusher.run())
    try:
        sent = []
        doomed = today() - dt.timedelta(days=90)
        # Events for 2.5 s, a small batch every 10 ms; a partition past retention appears midway.
        for step in range(250):
            batch = [event(message, profile, "opened") for _ in range(5)]
            sent += batch
            await push(redis, settings, batch)
            if step == 50:
                await create_days(pg, [doomed])
            await asyncio.sleep(0.01)

        async def all_stored() -> bool:
            return len(await stored_ids(pg, [message])) == len(sent)

        await wait_until(all_stored, 20, "every event stored")

        async def doomed_dropped() -> bool:
            return doomed not in await existing_days(pg)

        await wait_until(doomed_dropped, 5, "the maintenance run after the old partition appeared")
    finally:
        flusher.close()
        await asyncio.wait_for(running, 10)
    assert sorted(await stored_ids(pg, [message])) == sorted(e.id for e in sent)
    failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("flusher")]
    assert failures == []

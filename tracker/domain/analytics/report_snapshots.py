"""Snapshots of the list reports: a warm report is one row read, whatever the list's size (migration 0010).

A list's cohorts (over the default range) and lifetimes read every member's rollups: at 50,000
members that is 100-400 ms of Postgres work per request. So each answer is kept in
`report_snapshots` with the time it is exact as of, and served from there:

- younger than `MAX_AGE_S`: served as it is;
- older: served as it is, and refreshed in the background (one refresh at a time per process);
- older than `SYNC_AFTER_S`, or missing: computed before answering (the cold path).

So an answer is never older than `SYNC_AFTER_S`, and under steady traffic no older than `MAX_AGE_S`
plus one refresh. A refresher holds a transaction advisory lock on its key: one computes at a time
per key across every edge, a background one that finds the lock taken leaves it to the holder, and
a cold request waits for the holder and takes its result. `as_of` is the clock just before the
computing statement: everything committed before it is counted (and possibly a little after).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from tracker.domain.analytics import cohorts

log = logging.getLogger("tracker.domain.analytics.report_snapshots")

MAX_AGE_S = 60.0  # older snapshots are refreshed in the background (TRACKER_ANALYTICS_SNAPSHOT_MAX_AGE_S)
SYNC_AFTER_S = 300.0  # older ones (nobody looked for a while) are recomputed before answering (..._SYNC_AFTER_S)
MAX_BACKGROUND = 1  # background refreshes at once per process

Compute = Callable[[asyncpg.Connection, dt.datetime], Awaitable[Any]]


@dataclass(frozen=True)
class Key:
    report: str  # "cohorts" or "lifetime"
    resource_id: int
    variant: str  # what else the answer depends on: the period and range span, or the statuses

    @property
    def lock_name(self) -> str:
        return f"report_snapshots:{self.report}:{self.resource_id}:{self.variant}"


@dataclass(frozen=True)
class Snapshot:
    as_of: dt.datetime
    body: Any  # what the compute function returned, as JSON builtins
    age_s: float


_READ = """
select computed_at, body, extract(epoch from clock_timestamp() - computed_at)::float8 as age
from report_snapshots where report = $1 and resource_id = $2 and variant = $3
"""
_WRITE = """
insert into report_snapshots (report, resource_id, variant, computed_at, body) values ($1, $2, $3, $4, $5::jsonb)
on conflict (report, resource_id, variant) do update set computed_at = excluded.computed_at, body = excluded.body
"""


async def read(conn: asyncpg.Connection, key: Key) -> Snapshot | None:
    row = await conn.fetchrow(_READ, key.report, key.resource_id, key.variant)
    if row is None:
        return None
    return Snapshot(row["computed_at"], msgspec.json.decode(row["body"]), row["age"])


async def refresh(conn: asyncpg.Connection, key: Key, compute: Compute, fresh_s: float, wait: bool) -> Snapshot | None:
    """Compute and store the key's snapshot unless one younger than `fresh_s` is there by the time the
    lock is ours. `wait=False`: None when another refresher holds the lock (it will store its own)."""
    async with conn.transaction():
        if wait:
            await conn.execute("select pg_advisory_xact_lock(hashtextextended($1, 0))", key.lock_name)
        elif not await conn.fetchval("select pg_try_advisory_xact_lock(hashtextextended($1, 0))", key.lock_name):
            return None
        # Read after the lock: a refresher we waited for has committed its snapshot by now.
        found = await read(conn, key)
        if found is not None and found.age_s <= fresh_s:
            return found
        # A few hundred ms of plain scans and joins: compiling them (JIT) would cost about as much again.
        await conn.execute("set local jit = off")
        # The clock before the computing statement, which sees at least what was committed by then.
        as_of = await conn.fetchval("select clock_timestamp()")
        body = msgspec.to_builtins(await compute(conn, as_of))
        await conn.execute(_WRITE, key.report, key.resource_id, key.variant, as_of, msgspec.json.encode(body).decode())
        return Snapshot(as_of, body, 0.0)


class CohortBody(msgspec.Struct):
    start: dt.datetime
    end: dt.datetime
    cohorts: list[cohorts.Cohort]


class ReportSnapshots:
    """One per edge process: the ages that decide what is served, and the background refreshes in flight."""

    def __init__(self, max_age_s: float = MAX_AGE_S, sync_after_s: float = SYNC_AFTER_S) -> None:
        self.max_age_s = max_age_s
        self.sync_after_s = max(sync_after_s, max_age_s)
        self.background_refreshes = 0  # snapshots computed in the background (bench.analytics reads it)
        self._in_flight: set[Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # held so that a running refresh is not garbage-collected

    async def serve(self, conn: asyncpg.Connection, pool: asyncpg.Pool | None, key: Key, compute: Compute) -> Snapshot:
        """The key's snapshot, by the rules of the module doc."""
        found = await read(conn, key)
        if found is None or found.age_s > self.sync_after_s:
            computed = await refresh(conn, key, compute, self.sync_after_s, wait=True)
            assert computed is not None  # a waiting refresh always ends with a snapshot
            return computed
        if found.age_s > self.max_age_s and pool is not None:
            self._refresh_later(pool, key, compute)
        return found

    def _refresh_later(self, pool: asyncpg.Pool, key: Key, compute: Compute) -> None:
        # One at a time per process: refreshes take pool connections and cores from the requests they
        # serve; a stale list skipped now is picked up by its next request after this one ends.
        if len(self._in_flight) >= MAX_BACKGROUND:
            return
        self._in_flight.add(key)
        task = asyncio.get_running_loop().create_task(self._refresh_in_background(pool, key, compute))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh_in_background(self, pool: asyncpg.Pool, key: Key, compute: Compute) -> None:
        try:
            async with pool.acquire() as conn:
                done = await refresh(conn, key, compute, self.max_age_s, wait=False)
            if done is not None and done.age_s == 0.0:
                self.background_refreshes += 1
        except Exception:  # the stale snapshot stays served; the next request past max_age_s tries again
            log.exception("refreshing the %s report of resource %s failed", key.report, key.resource_id)
        finally:
            self._in_flight.discard(key)

    async def settled(self) -> None:
        """Wait for the background refreshes (tests, benchmarks, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cohorts(
        self, conn: asyncpg.Connection, pool: asyncpg.Pool | None, resource_id: int, period: str, max_days: int
    ) -> tuple[dt.datetime, CohortBody]:
        """The cohorts over the default range as of the snapshot: [as_of - 12 weeks (or a year), as_of)."""
        await cohorts.check_resource(conn, resource_id)

        async def compute(c: asyncpg.Connection, as_of: dt.datetime) -> CohortBody:
            start, end = cohorts.default_range(period, max_days, as_of)
            return CohortBody(start, end, await cohorts.cohorts(c, resource_id, period, start, end, as_of))

        found = await self.serve(conn, pool, Key("cohorts", resource_id, f"{period}/{max_days}d"), compute)
        return found.as_of, msgspec.convert(found.body, CohortBody)

    async def lifetime(
        self, conn: asyncpg.Connection, pool: asyncpg.Pool | None, resource_id: int, statuses: list[str]
    ) -> tuple[dt.datetime, dict[str, Any]]:
        await cohorts.check_resource(conn, resource_id)

        async def compute(c: asyncpg.Connection, _as_of: dt.datetime) -> dict[str, Any]:
            return await cohorts.lifetime(c, resource_id, statuses)

        found = await self.serve(conn, pool, Key("lifetime", resource_id, ",".join(sorted(statuses))), compute)
        return found.as_of, found.body

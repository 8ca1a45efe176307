"""Cohorts (profiles by when they subscribed, active share per following period) and lifetimes of a list."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

from tracker.domain.errors import NotFound

PERIODS = ("week", "month")


@dataclass
class Cohort:
    start: dt.datetime  # the period the profiles subscribed in
    profiles: int
    active: list[int]  # per period from the cohort's own (0) on: profiles active in it
    share: list[float]


async def check_resource(conn: asyncpg.Connection, resource_id: int) -> None:
    if not await conn.fetchval("select exists (select from resources where id = $1)", resource_id):
        raise NotFound("resource", resource_id)


_COHORTS = """
with members as (
    select profile_id, date_trunc($2, subscribed_at, 'UTC') as cohort from subscriptions
    where resource_id = $1 and subscribed_at >= $3 and subscribed_at < $4
), sizes as (
    select cohort, count(*) as profiles from members group by 1
), active as (
    select m.cohort,
           case when $2 = 'week' then (d.day - (m.cohort at time zone 'UTC')::date) / 7
                else (extract(year from d.day) * 12 + extract(month from d.day))
                     - (extract(year from m.cohort at time zone 'UTC') * 12
                        + extract(month from m.cohort at time zone 'UTC')) end::int as period,
           count(distinct m.profile_id) as profiles
    from members m
    join profile_active_days d on d.profile_id = m.profile_id and d.day >= (m.cohort at time zone 'UTC')::date
         and d.day < $5::date
    group by 1, 2
)
select s.cohort, s.profiles, coalesce(array_agg(a.period order by a.period) filter (where a.period is not null),
       '{}') as periods, coalesce(array_agg(a.profiles order by a.period) filter (where a.period is not null), '{}')
       as active
from sizes s left join active a using (cohort) group by 1, 2 order by 1
"""


def _periods_between(start: dt.datetime, end: dt.datetime, period: str) -> int:
    if period == "week":
        return (end - start).days // 7 + 1
    return (end.year - start.year) * 12 + end.month - start.month + 1


async def cohorts(
    conn: asyncpg.Connection, resource_id: int, period: str, start: dt.datetime, end: dt.datetime, now: dt.datetime
) -> list[Cohort]:
    """Profiles that subscribed in [start, end), by period; activity counted up to now."""
    await check_resource(conn, resource_id)
    out = []
    for row in await conn.fetch(_COHORTS, resource_id, period, start, end, now + dt.timedelta(days=1)):
        length = max(_periods_between(row["cohort"], now, period), 1)
        active = [0] * length
        for index, count in zip(row["periods"], row["active"], strict=True):
            if 0 <= index < length:
                active[index] = count
        size = row["profiles"]
        out.append(Cohort(row["cohort"], size, active, [round(a / size, 4) if size else 0.0 for a in active]))
    return out


async def lifetime(conn: asyncpg.Connection, resource_id: int, statuses: list[str]) -> dict[str, Any]:
    """Per profile of the list: lifetime in days (first to last activity), messages received, opened,
    clicked; each measure as quantiles and a histogram of power-of-two buckets ([0,1), [1,2), [2,4), ...)."""
    await check_resource(conn, resource_id)
    rows = await conn.fetch(
        """
        with members as (
            select coalesce(extract(epoch from a.last_at - a.first_at) / 86400, 0)::float8 as lifetime_days,
                   coalesce(a.received, 0)::float8 as received, coalesce(a.opened, 0)::float8 as opened,
                   coalesce(a.clicked, 0)::float8 as clicked, a.first_at is not null as active
            from subscriptions s left join profile_activity a on a.profile_id = s.profile_id
            where s.resource_id = $1 and s.status = any($2::text[])
        ), measures as (
            select v.name, v.value from members m cross join lateral (values ('lifetime_days', m.lifetime_days),
                ('received', m.received), ('opened', m.opened), ('clicked', m.clicked)) v(name, value)
        ), buckets as (
            select name, case when value < 1 then 0 else floor(log(2, value::numeric))::int + 1 end as bucket,
                   count(*) as n
            from measures group by 1, 2
        )
        select m.name, m.profiles, m.q, b.buckets, b.counts, (select count(*) filter (where active) from members)
               as ever_active
        from (select name, count(*) as profiles,
                     percentile_cont(array[0.5, 0.9, 0.99]) within group (order by value) as q
              from measures group by 1) m
        join (select name, array_agg(bucket order by bucket) as buckets, array_agg(n order by bucket) as counts
              from buckets group by 1) b using (name)
        """,
        resource_id, statuses,
    )  # fmt: skip
    profiles = rows[0]["profiles"] if rows else 0
    ever_active = rows[0]["ever_active"] if rows else 0
    measures = {}
    for name in ("lifetime_days", "received", "opened", "clicked"):
        row = next((r for r in rows if r["name"] == name), None)
        q = list(row["q"]) if row else [None, None, None]
        histogram = [
            {"low": 0 if b == 0 else 2 ** (b - 1), "high": 1 if b == 0 else 2**b, "profiles": n}
            for b, n in (zip(row["buckets"], row["counts"], strict=True) if row else [])
        ]  # fmt: skip
        measures[name] = {"p50": q[0], "p90": q[1], "p99": q[2], "histogram": histogram}
    return {"resource_id": resource_id, "profiles": profiles, "ever_active": ever_active, "measures": measures}

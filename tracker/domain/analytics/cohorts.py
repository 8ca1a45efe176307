"""Cohorts (profiles by when they subscribed, active share per following period) and lifetimes of a list."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import asyncpg

from tracker.domain.analytics.active_days import ACTIVE_KINDS
from tracker.domain.errors import NotFound

# Kinds as SQL arrays: what the person did, and what counts a message as received, opened, clicked.
_ACTIVE = "array[" + ", ".join(f"'{kind}'" for kind in sorted(ACTIVE_KINDS)) + "]"
_RECEIVED = "array['sent', 'delivered', 'push_delivered']"
_OPENED = "array['opened', 'push_opened']"
_CLICKED = "array['clicked', 'push_clicked']"

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


def default_range(period: str, max_days: int, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """[from, to) of a cohort report given neither: the last 12 weeks, or year, up to now (at most `max_days`)."""
    back = dt.timedelta(weeks=12) if period == "week" else dt.timedelta(days=365)
    return max(now - back, now - dt.timedelta(days=max_days)), now


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


# Power-of-two bucket edges for the lifetime in days (bucket b holds [2**(b-1), 2**b), bucket 0 holds [0, 1)):
# width_bucket compares floats exactly, where a float log can land a power of two in the bucket below.
_DAY_EDGES = [float(2**b) for b in range(41)]
QUANTILES = (0.5, 0.9, 0.99)
_COUNTED = ("received", "opened", "clicked")

# Each member's lifetime in the list: what the person did with the list's own messages, from the
# per-message rollup (message_profile_stats, read by its primary key, a range per message): first
# and last action, and how many of the messages they received (a send or a delivery report), opened
# and clicked. Its cost follows the list's messages and their recipients, not the number of events,
# and the flusher keeps nothing per profile for it. `$1` is the list, `$2` the statuses.
MEMBER_ACTIVITY = f"""
with per_message as (
    select profile_id, message_id,
           bool_or(kind = any({_RECEIVED})) as received, bool_or(kind = any({_OPENED})) as opened,
           bool_or(kind = any({_CLICKED})) as clicked,
           min(first_at) filter (where kind = any({_ACTIVE})) as first_at,
           max(last_at) filter (where kind = any({_ACTIVE})) as last_at
    from message_profile_stats
    where message_id = any(array(select id from messages where resource_id = $1))
    group by 1, 2
), per_profile as (
    select profile_id, min(first_at) as first_at, max(last_at) as last_at, count(*) filter (where received) as received,
           count(*) filter (where opened) as opened, count(*) filter (where clicked) as clicked
    from per_message group by 1
)
select s.profile_id, a.first_at, a.last_at, coalesce(a.received, 0) as received, coalesce(a.opened, 0) as opened,
       coalesce(a.clicked, 0) as clicked
from subscriptions s left join per_profile a on a.profile_id = s.profile_id
where s.resource_id = $1 and s.status = any($2::text[])
"""

# One pass over the members: the lifetime's quantiles and buckets in SQL (floats, one sort), and for the
# three counts their distribution by value (a few distinct small integers), from which quantiles and
# buckets are exact in Python. No numeric log and no row per (profile, measure).
_LIFETIME = f"""
with activity as ({MEMBER_ACTIVITY}), members as materialized (
    select coalesce(extract(epoch from last_at - first_at) / 86400, 0)::float8 as days,
           received, opened, clicked, first_at is not null as active
    from activity
)
select 'lifetime_days' as name, null::bigint as value, count(*) as n, count(*) filter (where active) as ever,
       percentile_cont($4::float8[]) within group (order by days) as q
from members
union all select 'days_bucket', width_bucket(days, $3::float8[]), count(*), null, null from members group by 2
union all select 'received', received, count(*), null, null from members group by 2
union all select 'opened', opened, count(*), null, null from members group by 2
union all select 'clicked', clicked, count(*), null, null from members group by 2
"""


def quantiles_of_counts(counts: list[tuple[int, int]], qs: tuple[float, ...] = QUANTILES) -> list[float | None]:
    """Postgres' percentile_cont over the values that `counts` ((value, how many), any order) stand for."""
    pairs = sorted(counts)
    n = sum(k for _, k in pairs)
    if n == 0:
        return [None] * len(qs)

    def at(index: int) -> float:  # the value at 0-based rank `index` of the sorted values
        seen = 0
        for value, k in pairs:
            seen += k
            if index < seen:
                return float(value)
        raise AssertionError(index)

    out: list[float | None] = []
    for q in qs:
        position = q * (n - 1)
        low, high = math.floor(position), math.ceil(position)
        first = at(low)
        out.append(first if low == high else first + (at(high) - first) * (position - low))
    return out


def _histogram(buckets: dict[int, int]) -> list[dict[str, int]]:
    return [{"low": 0 if b == 0 else 2 ** (b - 1), "high": 1 if b == 0 else 2**b, "profiles": n}
            for b, n in sorted(buckets.items())]  # fmt: skip


async def lifetime(conn: asyncpg.Connection, resource_id: int, statuses: list[str]) -> dict[str, Any]:
    """Per profile of the list: lifetime in days (first to last activity), messages received, opened,
    clicked; each measure as quantiles and a histogram of power-of-two buckets ([0,1), [1,2), [2,4), ...)."""
    await check_resource(conn, resource_id)
    rows = await conn.fetch(_LIFETIME, resource_id, statuses, _DAY_EDGES, list(QUANTILES))
    head = next(r for r in rows if r["name"] == "lifetime_days")
    profiles, ever_active = head["n"], head["ever"]
    q = list(head["q"]) if profiles else [None] * len(QUANTILES)
    day_buckets = {r["value"]: r["n"] for r in rows if r["name"] == "days_bucket"}
    measures = {"lifetime_days": {"p50": q[0], "p90": q[1], "p99": q[2], "histogram": _histogram(day_buckets)}}
    for name in _COUNTED:
        counts = [(r["value"], r["n"]) for r in rows if r["name"] == name]
        buckets: dict[int, int] = {}
        for value, n in counts:  # bucket b >= 1 holds [2**(b-1), 2**b): the value's bit length
            bucket = 0 if value < 1 else int(value).bit_length()
            buckets[bucket] = buckets.get(bucket, 0) + n
        p50, p90, p99 = quantiles_of_counts(counts)
        measures[name] = {"p50": p50, "p90": p90, "p99": p99, "histogram": _histogram(buckets)}
    return {"resource_id": resource_id, "profiles": profiles, "ever_active": ever_active, "measures": measures}

"""One message's funnel: stages from the counters, dwell quantiles, and a time series from the hourly rollup."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from tracker.domain.errors import NotFound

# Stage -> the event kind counted for it; push channels count their own kinds for three stages.
STAGES = ("sent", "rendered", "delivered", "undelivered", "soft_bounce", "hard_bounce", "complained", "opened",
          "read", "clicked", "unsubscribed", "confirmed")  # fmt: skip
_PUSH_KINDS = {"delivered": "push_delivered", "opened": "push_opened", "clicked": "push_clicked"}
INTERVALS = ("hour", "day")
DWELL_QUANTILES = (0.5, 0.9, 0.99)


def stage_kinds(channel: str) -> dict[str, str]:
    push = channel in ("web_push", "app_push")
    return {stage: _PUSH_KINDS.get(stage, stage) if push else stage for stage in STAGES if stage != "rendered"}


@dataclass
class Stage:
    name: str
    total: int = 0
    uniques: int = 0
    human: int = 0
    human_uniques: int = 0
    machine: int = 0
    machine_uniques: int = 0
    rate: float | None = None  # uniques over delivered uniques


@dataclass
class Funnel:
    message_id: int
    channel: str
    name: str
    stages: list[Stage]
    dwell_s: dict[str, float | None]
    interval: str
    start: dt.datetime
    end: dt.datetime
    series: list[dict[str, Any]] = field(default_factory=list)  # {"at": ..., "<stage>": total, ...}


async def message_info(conn: asyncpg.Connection, message_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(
        "select id, channel, name, resource_id, current_version, created_at from messages where id = $1", message_id
    )
    if row is None:
        raise NotFound("message", message_id)
    return row


def quantiles(histogram: list[tuple[int, int]], wanted: tuple[float, ...]) -> dict[str, float | None]:
    """Quantiles of whole-second buckets, linear inside a bucket."""
    total = sum(count for _, count in histogram)
    out: dict[str, float | None] = {}
    for q in wanted:
        name = f"p{round(q * 100)}"
        if total == 0:
            out[name] = None
            continue
        rank, seen = q * total, 0
        for seconds, count in histogram:
            if seen + count >= rank:
                out[name] = round(seconds + (rank - seen) / count, 2)
                break
            seen += count
    return out


async def funnel(
    conn: asyncpg.Connection, message_id: int, interval: str, start: dt.datetime, end: dt.datetime
) -> Funnel:
    info = await message_info(conn, message_id)
    kinds = stage_kinds(info["channel"])
    rows = {
        r["kind"]: r
        for r in await conn.fetch(
            "select kind, total, uniques, human, human_uniques, machine, machine_uniques"
            " from message_counters where message_id = $1 and kind = any($2::text[])",
            message_id, list(kinds.values()),
        )
    }  # fmt: skip
    rendered = await conn.fetchval("select count(*) from message_renders where message_id = $1", message_id)
    stages = []
    for stage in STAGES:
        if stage == "rendered":
            stages.append(Stage("rendered", rendered, rendered))
            continue
        row = rows.get(kinds[stage])
        stages.append(Stage(stage, *(row[c] for c in ("total", "uniques", "human", "human_uniques", "machine",
                                                       "machine_uniques"))) if row else Stage(stage))  # fmt: skip
    delivered = next(s for s in stages if s.name == "delivered").uniques
    for stage in stages:
        stage.rate = round(stage.uniques / delivered, 4) if delivered and stage.name != "delivered" else None
    histogram = await conn.fetch(
        "select seconds, total from message_read_dwell where message_id = $1 order by seconds", message_id
    )
    dwell = quantiles([(r["seconds"], r["total"]) for r in histogram], DWELL_QUANTILES)
    result = Funnel(message_id, info["channel"], info["name"], stages, dwell, interval, start, end)
    result.series = await series(conn, message_id, kinds, interval, start, end)
    return result


_SERIES = """
with buckets as (
    select generate_series(date_trunc($3, $4::timestamptz, 'UTC'), $5::timestamptz - interval '1 microsecond',
                           ('1 ' || $3)::interval) as at
), rolled as (
    select date_trunc($3, hour, 'UTC') as at, kind, sum(total)::bigint as total,
           sum(total) filter (where verdict = 'human')::bigint as human
    from message_hourly
    where message_id = $1 and kind = any($2::text[]) and hour >= date_trunc('hour', $4::timestamptz, 'UTC')
      and hour < $5
    group by 1, 2
)
select b.at, r.kind, r.total, r.human from buckets b left join rolled r using (at) order by b.at
"""


async def series(
    conn: asyncpg.Connection, message_id: int, kinds: dict[str, str], interval: str, start: dt.datetime,
    end: dt.datetime,
) -> list[dict[str, Any]]:  # fmt: skip
    """One point per hour or day of [start, end), every stage present (zeros where nothing happened)."""
    stage_of = {kind: stage for stage, kind in kinds.items()}
    points: dict[dt.datetime, dict[str, Any]] = {}
    for row in await conn.fetch(_SERIES, message_id, list(kinds.values()), interval, start, end):
        point = points.setdefault(row["at"], {"at": row["at"], **dict.fromkeys(kinds, 0), "human_opened": 0,
                                               "human_clicked": 0})  # fmt: skip
        if row["kind"] is not None:
            stage = stage_of[row["kind"]]
            point[stage] = row["total"]
            if stage in ("opened", "clicked"):
                point[f"human_{stage}"] = row["human"] or 0
    return list(points.values())

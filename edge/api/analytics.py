"""Message reports (funnel and time series, clicks per link), cohorts and lifetimes of a list, report links.

Every report reads the flusher's rollups (tracker.domain.analytics); JSON by default, CSV with
`Accept: text/csv`. A list's lifetimes and its cohorts over the default range come from snapshots
(tracker.domain.analytics.report_snapshots): both answers carry `as_of`, the time they are exact as of.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from edge.api._http import ApiContext, json_response, path_id, read_json
from edge.api.analytics_csv import csv_response, wants_csv
from edge.api.schemas import (
    ClickReport,
    Cohort,
    CohortReport,
    FunnelStage,
    LifetimeReport,
    MessageReport,
    ReportLinkIn,
    ReportLinkOut,
    SeriesPoint,
)
from tracker.contract.numbers import MAX_VERSION
from tracker.domain.analytics import clicks, cohorts, funnel
from tracker.domain.analytics.params import bad, choice, integer, moment, time_range
from tracker.domain.analytics.report_links import stored_message_link

HOURLY_MAX_DAYS = 31  # an hourly series over more than a month is a day series people cannot read


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def message_report(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    message_id = path_id(request, "message_id")
    query = request.query_params
    interval = choice(query, "interval", funnel.INTERVALS, "day") or "day"
    info = await funnel.message_info(conn, message_id)
    max_days = ctx.settings.edge.analytics_max_range_days
    if interval == "hour":
        max_days = min(max_days, HOURLY_MAX_DAYS)
    start, end = time_range(query, max_days, info["created_at"], _now())
    result = await funnel.funnel(conn, message_id, interval, start, end)
    if wants_csv(request):
        names = [s for s in funnel.STAGES if s != "rendered"] + ["human_opened", "human_clicked"]
        return csv_response(f"message-{message_id}-{interval}", ["at", *names],
                            ([point["at"], *(point[n] for n in names)] for point in result.series))  # fmt: skip
    return json_response(MessageReport(
        message_id, result.channel, result.name,
        [msgspec.convert(stage, FunnelStage, from_attributes=True) for stage in result.stages],
        result.dwell_s, interval, start, end, [SeriesPoint(**point) for point in result.series],
    ))  # fmt: skip


async def message_clicks(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    message_id = path_id(request, "message_id")
    version = integer(request.query_params, "version", None, 1, MAX_VERSION)
    result = await clicks.click_map(conn, message_id, version)
    if wants_csv(request):
        return csv_response(
            f"message-{message_id}-v{result.version}-clicks",
            ["index", "url", "text", "total", "uniques", "human", "share"],
            ([c.index, c.url, c.text, c.total, c.uniques, c.human, c.share] for c in result.links),
        )
    return json_response(msgspec.convert(result, ClickReport, from_attributes=True))


def _resource(request: Request) -> int:
    resource = integer(request.query_params, "resource", None)
    if resource is None:
        raise bad("resource", "required: the id of a resource (subscription list)")
    return resource


async def cohort_report(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    resource = _resource(request)
    query = request.query_params
    period = choice(query, "period", cohorts.PERIODS, "week") or "week"
    max_days = ctx.settings.edge.analytics_max_range_days
    if moment(query, "from") is None and moment(query, "to") is None:
        # The default range moves with the clock: its answer is kept as a snapshot, as of its own time.
        as_of, body = await ctx.state.report_snapshots.cohorts(conn, ctx.state.pg_pool, resource, period, max_days)
        start, end, rows = body.start, body.end, body.cohorts
    else:  # a range of the caller's own: computed now, exact
        as_of = _now()
        start, end = time_range(query, max_days, cohorts.default_range(period, max_days, as_of)[0], as_of)
        rows = await cohorts.cohorts(conn, resource, period, start, end, as_of)
    if wants_csv(request):
        return csv_response(f"cohorts-{resource}-{period}",
                            ["cohort", "profiles", "period", "active", "share", "as_of"],
                            ([c.start, c.profiles, i, a, s, as_of] for c in rows
                             for i, (a, s) in enumerate(zip(c.active, c.share, strict=True))))  # fmt: skip
    cohort_rows = [Cohort(c.start, c.profiles, c.active, c.share) for c in rows]
    return json_response(CohortReport(resource, period, start, end, cohort_rows, as_of))  # type: ignore[arg-type]


async def lifetime_report(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    resource = _resource(request)
    status = choice(request.query_params, "status", ("subscribed", "unsubscribed", "pending", "any"), "any")
    statuses = ["pending", "subscribed", "unsubscribed"] if status == "any" else [status or "subscribed"]
    as_of, result = await ctx.state.report_snapshots.lifetime(conn, ctx.state.pg_pool, resource, statuses)
    if wants_csv(request):
        return csv_response(f"lifetime-{resource}", ["measure", "low", "high", "profiles", "as_of"],
                            ([name, b["low"], b["high"], b["profiles"], as_of] for name, m in result["measures"].items()
                             for b in m["histogram"]))  # fmt: skip
    return json_response(msgspec.convert({**result, "as_of": as_of}, LifetimeReport))


async def create_report_link(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    body = await read_json(request, ctx, ReportLinkIn)
    link = await stored_message_link(conn, ctx.settings, body.message_id, body.page, body.version)
    return json_response(ReportLinkOut(link.url, dt.datetime.fromtimestamp(link.expires_at, dt.UTC)), 201)

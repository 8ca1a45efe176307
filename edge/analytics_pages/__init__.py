"""Report pages for people: a message's funnel and its click map, opened through signed report links.

Not the provider reports of `edge/reports/`. The pages need no API key: a short-lived signed link
(tracker.domain.analytics.report_links) names the message; a missing, forged or expired one gets a
403 page. Pages read the same rollups as the API and run no script at all.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from edge.analytics_pages import clickmap
from edge.analytics_pages.chart import line_chart
from edge.routing import CheckedRoute, is_id
from edge.state import EdgeState
from tracker.contract.numbers import MAX_VERSION, parse_int
from tracker.domain.analytics import clicks, funnel
from tracker.domain.analytics.report_links import check
from tracker.domain.errors import InputError

# Only what the pages themselves need: inline styles, inline SVG, images of the message.
_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",  # the link's signature stays out of Referer headers
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
}
CHART_DAYS = 60
_ID = {"message_id": is_id}


class AnalyticsPages:
    def __init__(self, state: EdgeState) -> None:
        self.state = state
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")), autoescape=True,
            auto_reload=False,
        )  # fmt: skip

    def routes(self) -> list[Route]:
        # The id as parse_int reads it (Starlette's `:int` takes "01" and any length too).
        return [
            CheckedRoute("/reports/messages/{message_id}", self.funnel_page, methods=["GET"], checks=_ID),
            CheckedRoute("/reports/messages/{message_id}/clickmap", self.clickmap_page, methods=["GET"], checks=_ID),
        ]

    def _html(self, template: str, status_code: int = 200, **context: object) -> Response:
        body = self.env.get_template(template).render(**context)
        return HTMLResponse(body, status_code, headers=_HEADERS)

    def _refused(self, status: int, title: str, reason: str) -> Response:
        return self._html("refused.html", status, code=status, title=title, reason=reason)

    def _denied(self, request: Request, message_id: int) -> Response | None:
        why = check(self.state.settings.signing_keys, message_id, request.query_params.get("t", ""))
        if why is None:
            return None
        if why == "expired":
            return self._refused(403, "This report link has expired", "Ask for a new one (tracker report-url).")
        return self._refused(403, "This report link is not valid", "The link is incomplete or was changed.")

    def _url(self, message_id: int, token: str, page: str = "", **query: object) -> str:
        return f"/reports/messages/{message_id}{page}?" + urlencode({**query, "t": token})

    async def funnel_page(self, request: Request) -> Response:
        message_id = int(request.path_params["message_id"])  # an id: the route checked it
        if (denied := self._denied(request, message_id)) is not None:
            return denied
        assert self.state.pg_pool is not None
        now = dt.datetime.now(dt.UTC)
        try:
            async with self.state.pg_pool.acquire() as conn:
                info = await funnel.message_info(conn, message_id)
                start = max(info["created_at"], now - dt.timedelta(days=CHART_DAYS))
                report = await funnel.funnel(conn, message_id, "day", start, now)
        except InputError as exc:
            return self._refused(exc.status, "Not found", exc.message)
        labels = [point["at"].strftime("%m-%d") for point in report.series]
        chart = line_chart(labels, {name: [p[name] for p in report.series] for name in ("opened", "clicked")})
        widest = max([1, *(stage.uniques for stage in report.stages)])
        clickmap_url = self._url(message_id, request.query_params["t"], "/clickmap")
        return self._html("funnel.html", report=report, chart=chart, widest=widest, clickmap_url=clickmap_url)

    async def clickmap_page(self, request: Request) -> Response:
        message_id = int(request.path_params["message_id"])  # an id: the route checked it
        if (denied := self._denied(request, message_id)) is not None:
            return denied
        raw = request.query_params.get("version")
        version = None if raw is None else parse_int(raw, 1, MAX_VERSION)
        if raw is not None and version is None:
            return self._refused(404, "Not found", f"version {raw[:20]!r} of message {message_id} does not exist")
        assert self.state.pg_pool is not None
        try:
            async with self.state.pg_pool.acquire() as conn:
                report = await clicks.click_map(conn, message_id, version)
                name = await conn.fetchval("select name from messages where id = $1", message_id)
        except InputError as exc:
            return self._refused(exc.status, "Not found", exc.message)
        token = request.query_params["t"]
        versions = {v.version: self._url(message_id, token, "/clickmap", version=v.version) for v in report.versions}
        body = clickmap.page(clicks.parse_content(report.content), report, name, versions,
                             self._url(message_id, token))  # fmt: skip
        return HTMLResponse(body, headers=_HEADERS)

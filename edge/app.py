"""The edge's app factory: Starlette for the small routes, pure ASGI in front for the hot ones."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from edge.analytics_pages import AnalyticsPages
from edge.api import build_api
from edge.api._http import http_exception
from edge.health import dependencies, health, ready
from edge.ops_auth import ops_only
from edge.reports import ProviderReportRoutes
from edge.state import EdgeState
from edge.tracking import TrackingRoutes
from tracker.config import Settings


def create_app(settings: Settings | None = None) -> TrackingRoutes:
    """Build the edge from settings (from the environment when not given)."""
    if settings is None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        settings = Settings.from_env()
    state = EdgeState(settings)
    reports = ProviderReportRoutes(state)
    state.metrics.provider_report_counts = reports.counters

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.open()
        try:
            yield
        finally:
            await state.close()

    ops_token = settings.edge.ops_token
    app = Starlette(
        routes=[
            # Open: load balancers probe these. The operator's two (edge/ops_auth.py) take TRACKER_OPS_TOKEN.
            Route("/health", health, methods=["GET", "HEAD"]),
            Route("/ready", ready, methods=["GET", "HEAD"]),
            Route("/health/deps", ops_only(dependencies, ops_token), methods=["GET", "HEAD"]),
            Route("/metrics", ops_only(state.metrics.endpoint, ops_token), methods=["GET", "HEAD"]),
            # Report pages for people (GET, signed links; edge/analytics_pages), not provider reports.
            *AnalyticsPages(state).routes(),
            # Provider reports: `/reports/...`, and `/hooks/...`, the path senders were given first.
            *reports.routes(),
            # The API (and its schema at /api/v1/openapi.json): off the hot path, behind API keys.
            Mount("/api/v1", app=build_api(state)),
        ],
        lifespan=lifespan,
        # A path the API's mount does not match (e.g. an escaped newline in an id) still gets the API's JSON.
        exception_handlers={HTTPException: _outer_http_exception},
    )
    # Starlette would answer a path with(out) a trailing slash with a redirect built from the request's
    # Host header: a 307 to any host a client names. A path is served as it is spelled, or not at all.
    app.router.redirect_slashes = False
    app.state.edge = state
    tracking = TrackingRoutes(state, app)
    return tracking


async def _outer_http_exception(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith("/api/"):
        return await http_exception(request, exc)
    assert isinstance(exc, HTTPException)
    return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code, headers=exc.headers)

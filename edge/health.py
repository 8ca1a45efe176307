"""`/health` (the process answers) and `/ready` (Redis and Postgres reachable, spool state)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

from edge.state import EdgeState


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def ready(request: Request) -> JSONResponse:
    state: EdgeState = request.app.state.edge
    problems = []
    try:
        async with asyncio.timeout(1.0):
            await state.redis.ping()
    except Exception as exc:
        problems.append(f"redis: {type(exc).__name__}: {exc}")
    try:
        async with asyncio.timeout(1.0):
            assert state.pg_pool is not None
            async with state.pg_pool.acquire() as conn:
                await conn.fetchval("select 1")
    except Exception as exc:
        problems.append(f"postgres: {type(exc).__name__}: {exc}")
    spool = state.events.state()
    if spool["mode"] != "redis":
        problems.append(f"spooling: {spool['reason']}")
    body = {"ready": not problems, "problems": problems, "events": spool}
    return JSONResponse(body, status_code=200 if not problems else 503, headers={"cache-control": "no-store"})

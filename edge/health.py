"""`/health` (the process answers), `/ready` (it can take traffic without losing it) and
`/health/deps` (how Redis, Postgres and the spool are doing).

Readiness is not dependency health: while Redis is down the edge answers from
memory and Postgres and spools its events, so a load balancer must keep sending
it traffic (pulling every edge at once during a Redis outage would lose more
than it saves). `/ready` is 503 only when events would be lost: spooling with a
spool that is full or cannot be written, or shutting down. `/health/deps` says
what is wrong, for people and alerts; its status is 503 unless all is well.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

from edge.state import EdgeState
from tracker.streams.cluster import fullest_memory

_NO_STORE = {"cache-control": "no-store"}


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def ready(request: Request) -> JSONResponse:
    state: EdgeState = request.app.state.edge
    events = state.events.state()
    problems = []
    if state.closing or state.events.closing:
        problems.append("shutting down")
    if events["mode"] != "redis" and not events["spool_writable"]:
        what = events["spool_error"] or f"full ({events['spool_bytes']} of {events['spool_max_bytes']} bytes)"
        problems.append(f"spooling ({events['reason']}) and the spool cannot take events: {what}")
    body = {"ready": not problems, "problems": problems, "events": events}
    return JSONResponse(body, status_code=200 if not problems else 503, headers=_NO_STORE)


async def dependencies(request: Request) -> JSONResponse:
    """Redis (reachable, memory), Postgres (reachable) and the spool (mode, reason, room, errors)."""
    state: EdgeState = request.app.state.edge
    redis: dict[str, Any] = {"ok": True}
    try:
        async with asyncio.timeout(1.0):
            memory = await fullest_memory(state.redis)  # on a cluster: the master closest to full
        redis["used_memory"], redis["maxmemory"] = int(memory["used_memory"]), int(memory.get("maxmemory", 0))
        redis["memory_full"] = state.events.memory_full
    except Exception as exc:
        redis = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    postgres: dict[str, Any] = {"ok": True}
    try:
        async with asyncio.timeout(1.0):
            assert state.pg_pool is not None
            async with state.pg_pool.acquire() as conn:
                await conn.fetchval("select 1")
    except Exception as exc:
        postgres = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    events = state.events.state()
    problems = [f"{name}: {part['error']}" for name, part in (("redis", redis), ("postgres", postgres))
                if not part["ok"]]  # fmt: skip
    if events["redis_memory_full"]:
        problems.append(f"redis: memory at {events['redis_used_memory']} of maxmemory {events['redis_maxmemory']}")
    if events["mode"] != "redis":
        problems.append(f"spooling: {events['reason']}")
    if events["spool_error"]:
        problems.append(f"spool: write failed: {events['spool_error']}")
    elif events["spool_full"]:
        problems.append(f"spool: full ({events['spool_bytes']} of {events['spool_max_bytes']} bytes)")
    spool = {
        "ok": events["mode"] == "redis" and events["spool_writable"],
        "mode": events["mode"],
        "reason": events["reason"],
        "path": str(state.spool.path),
        "bytes": events["spool_bytes"],
        "max_bytes": events["spool_max_bytes"],
        "writable": events["spool_writable"],
        "error": events["spool_error"],
        "dropped": events["spool_dropped"],
    }
    body = {"ok": not problems, "problems": problems, "redis": redis, "postgres": postgres, "spool": spool,
            "events": events}  # fmt: skip
    return JSONResponse(body, status_code=200 if not problems else 503, headers=_NO_STORE)

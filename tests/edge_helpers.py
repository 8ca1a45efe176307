"""Helpers shared by the edge tests: an in-process edge and reading events back from the streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from redis.asyncio import Redis

from edge.app import create_app
from edge.tracking import TrackingRoutes
from tracker.events import Event, decode_batch
from tracker.keys import ENTRY_FIELD, event_streams
from tracker.settings import Settings


@asynccontextmanager
async def running_edge(settings: Settings) -> AsyncIterator[tuple[TrackingRoutes, httpx.AsyncClient]]:
    """The edge app with its lifespan opened, and an HTTP client talking to it in process."""
    app = create_app(settings)
    await app.state.open()
    transport = httpx.ASGITransport(app=app, client=("203.0.113.77", 50000))
    client = httpx.AsyncClient(transport=transport, base_url="http://edge.test")
    try:
        yield app, client
    finally:
        await client.aclose()
        await app.state.close()


async def stream_events(redis: Redis, settings: Settings) -> list[Event]:
    events = []
    for stream in event_streams(settings.stream_prefix, settings.stream_shards):
        for _entry_id, fields in await redis.xrange(stream):
            events.extend(decode_batch(fields[ENTRY_FIELD]))
    return sorted(events, key=lambda e: e.id)


async def wait_for_events(redis: Redis, settings: Settings, count: int, timeout: float = 5.0) -> list[Event]:
    """Poll the streams until `count` events are there (or fail with what was found)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        events = await stream_events(redis, settings)
        if len(events) >= count or asyncio.get_running_loop().time() > deadline:
            return events
        await asyncio.sleep(0.01)

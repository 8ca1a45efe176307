"""Helpers shared by the edge tests: an in-process edge and reading events back from the streams."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from redis.asyncio import Redis

from edge.app import create_app
from edge.tracking import TrackingRoutes
from tracker.config import Settings
from tracker.contract.events import Event, decode_batch
from tracker.contract.keys import ENTRY_FIELD, event_streams


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


def edge_env(settings: Settings, **variables: str) -> dict[str, str]:
    """The environment that makes a real `edge` process use these test settings."""
    return {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "DATABASE_URL": settings.database_url,
        "TRACKER_SIGNING_KEYS": ",".join(f"{k}:{v.decode()}" for k, v in settings.signing_keys.items()),
        "TRACKER_STREAM_PREFIX": settings.stream_prefix,
        "TRACKER_SPOOL_DIR": str(settings.edge.spool_dir),
        **variables,
    }


async def wait_healthy(base_url: str, tries: int = 150) -> None:
    """Until the edge at `base_url` answers /health (0.1 s apart); AssertionError if it never does."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        for _ in range(tries):
            try:
                if (await http.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"the edge at {base_url} did not start")


@asynccontextmanager
async def real_edge(settings: Settings, port: int, *args: str, **variables: str) -> AsyncIterator[subprocess.Popen]:
    """A real Granian `edge` process on 127.0.0.1:`port`, ready to answer; killed afterwards if still running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "edge.serve", "--port", str(port), "--log-level", "warning", *args],
        env=edge_env(settings, **variables),
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the workers go down with it
    )
    try:
        await wait_healthy(f"http://127.0.0.1:{port}")
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # any worker left behind
        process.wait()

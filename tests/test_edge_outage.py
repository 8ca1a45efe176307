"""Redis outages, full streams, a full spool, dead workers' spools, and SIGTERM: nothing accepted is lost."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from edge.spool import Spool
from tests.edge_helpers import real_edge, running_edge, stream_events, wait_for_events
from tracker.contract.events import Event, EventIds, encode_event
from tracker.contract.keys import event_streams
from tracker.contract.tokens import Channel, TokenKind, mint
from tracker.domain.link_tables import Link, create_message
from tracker.ops.embedded import EmbeddedRedis


async def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def opens(settings, message_id: int, profiles: range) -> list[str]:
    return ["/o/" + mint(settings.signing_keys, 1, TokenKind.OPEN, Channel.EMAIL, message_id, p) for p in profiles]


@pytest.fixture
async def own_redis(tmp_path: Path, free_port: int):
    """A Redis this test can stop and start again at the same address (AOF keeps its data)."""
    server = EmbeddedRedis(tmp_path / "redis", port=free_port, persist=True)
    server.start()
    client = Redis.from_url(server.url)
    try:
        yield server, client
    finally:
        await client.aclose()
        server.stop()


async def test_redis_stopped_mid_traffic(settings, pg, own_redis) -> None:
    server, client = own_redis
    settings = settings.replace(redis_url=server.url, redis_timeout_s=0.5, edge={"redis_retry_s": 0.05})
    message_id, version = await create_message(pg, "email", "outage", [Link("https://example.com/x")])
    cold_message, cold_version = await create_message(pg, "email", "cold", [Link("https://example.com/cold")])
    click = "/c/" + mint(settings.signing_keys, 1, TokenKind.CLICK, Channel.EMAIL, message_id, 1, version, 0)
    cold_click = "/c/" + mint(
        settings.signing_keys, 1, TokenKind.CLICK, Channel.EMAIL, cold_message, 1, cold_version, 0
    )

    async def traffic(paths: list[str]) -> list[int]:
        responses = []
        for start in range(0, len(paths), 25):
            batch = paths[start : start + 25]
            responses += await asyncio.gather(*(http.get(p) for p in batch))
        return [r.status_code for r in responses]

    async with running_edge(settings) as (app, http):
        before = opens(settings, message_id, range(0, 150)) + [click] * 50
        assert set(await traffic(before)) == {200, 302}
        await wait_until(lambda: app.state.events.written == 200, what="first events in Redis")

        server.stop()
        during = opens(settings, message_id, range(150, 400)) + [click] * 49 + [cold_click]
        statuses = await traffic(during)
        assert statuses.count(200) == 250 and statuses.count(302) == 50  # cold link: from Postgres
        await wait_until(lambda: app.state.events.spooled == 300, what="events in the spool")
        assert app.state.events.mode == "spool"
        assert app.state.spool.path.stat().st_size > 0

        server.start()
        await wait_until(lambda: app.state.events.mode == "redis", what="replay after Redis came back")
        assert not app.state.spool.path.exists()
        after = opens(settings, message_id, range(400, 500))
        assert set(await traffic(after)) == {200}
        events = await wait_for_events(client, settings, 600)

    ids = [e.id for e in events]
    assert len(ids) == 600 and len(set(ids)) == 600  # every event exactly once
    assert sorted(e.profile_id for e in events if e.kind == "opened") == list(range(500))
    assert sum(e.kind == "clicked" for e in events) == 100


async def test_full_streams_make_the_edge_spool_until_the_flusher_catches_up(settings, redis, pg) -> None:
    settings = settings.replace(stream_shards=1, edge={"stream_max_len": 20, "batch_max_events": 5})
    message_id, _ = await create_message(pg, "email", "bound", [])
    async with running_edge(settings) as (app, http):
        for path in opens(settings, message_id, range(60)):
            assert (await http.get(path)).status_code == 200
            await asyncio.sleep(0.001)
        await wait_until(lambda: app.state.events.spooled + app.state.events.written == 60, what="all 60 placed")
        assert app.state.events.mode == "spool"
        assert "bound 20" in app.state.events.reason
        in_redis = await stream_events(redis, settings)
        assert 20 <= len(in_redis) < 60  # Redis stopped growing at the bound
        await asyncio.sleep(0.3)
        assert len(await stream_events(redis, settings)) == len(in_redis)

        # What a flusher does: consume and trim. The edge then replays its spool.
        await redis.delete(*event_streams(settings.stream_prefix, settings.stream_shards))
        await wait_until(lambda: app.state.events.mode == "redis", what="leaving spool mode")
        replayed = await stream_events(redis, settings)
    assert len(in_redis) + len(replayed) == 60
    assert {e.profile_id for e in in_redis} | {e.profile_id for e in replayed} == set(range(60))


async def test_a_full_spool_drops_loudly_and_the_pixel_still_answers(settings, pg, free_port, caplog) -> None:
    settings = settings.replace(redis_url=f"redis://127.0.0.1:{free_port}/0", redis_timeout_s=0.2,
                                edge={"spool_max_bytes": 4096})
    message_id, _ = await create_message(pg, "email", "full", [])
    caplog.set_level(logging.WARNING)
    async with running_edge(settings) as (app, http):
        for path in opens(settings, message_id, range(300)):
            assert (await http.get(path)).status_code == 200
        await wait_until(lambda: app.state.events.spooled + app.state.spool.dropped == 300, what="all placed")
        assert app.state.spool.size <= 4096
        assert app.state.spool.dropped > 0
        assert app.state.events.spooled > 0
    assert any("is full" in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)


async def test_spool_of_a_dead_worker_is_replayed_and_removed(settings, redis) -> None:
    settings.edge.spool_dir.mkdir(parents=True)
    dead = Spool(settings.edge.spool_dir, 1 << 20, "always")
    dead.path = settings.edge.spool_dir / "edge-999999999.spool"
    ids = EventIds()
    events = [Event(ids.new(), "opened", "email", 1, p, 1_700_000_000_000_000) for p in range(30)]
    dead.append([(e.profile_id % settings.stream_shards, encode_event(e)) for e in events])
    dead.close()  # the worker is gone: its lock is free

    async with running_edge(settings) as (app, _http):
        found = await wait_for_events(redis, settings, 30)
        await wait_until(lambda: app.state.events.mode == "redis", what="orphan replay")
    assert sorted(e.id for e in found) == sorted(e.id for e in events)
    assert not dead.path.exists()


async def test_sigterm_flushes_the_buffer(settings, redis, pg, free_port) -> None:
    """A real Granian edge: events still buffered at SIGTERM reach the stream before it exits."""
    message_id, _ = await create_message(pg, "email", "sigterm", [])
    # Nothing is written by age or count before the signal: only the shutdown flush can.
    slow = {"TRACKER_BATCH_MAX_AGE_MS": "10000", "TRACKER_BATCH_MAX_EVENTS": "100000"}
    async with real_edge(settings, free_port, **slow) as process:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}") as http:
            for path in opens(settings, message_id, range(25)):
                assert (await http.get(path)).status_code == 200
        assert await stream_events(redis, settings) == []  # still in the edge's buffer
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    events = await stream_events(redis, settings)
    assert sorted(e.profile_id for e in events) == list(range(25))
    assert not list(settings.edge.spool_dir.glob("*.spool"))

"""Redis outages, full streams, Redis near its maxmemory, a full spool, dead workers' spools, and SIGTERM:
nothing accepted is lost. Readiness while spooling, /health/deps, and an edge started on a taken port."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from edge.spool import Spool
from tests.rigs.edge_helpers import edge_env, real_edge, running_edge, stream_events, wait_for_events
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
        ready = await http.get("/ready")  # spooling and no room: events would be lost here
        assert ready.status_code == 503 and "full" in ready.json()["problems"][0]
    full = [m for m in caplog.messages if "is full" in m and "dropped" in m]
    assert len(full) == 1  # one line, not one per dropped batch


async def test_ready_while_spooling_with_room_and_deps_say_why(settings, pg, free_port) -> None:
    """A Redis outage must not make a load balancer pull the edge: /ready stays 200, /health/deps is 503."""
    settings = settings.replace(redis_url=f"redis://127.0.0.1:{free_port}/0", redis_timeout_s=0.2)
    message_id, _ = await create_message(pg, "email", "ready", [])
    async with running_edge(settings) as (app, http):
        for path in opens(settings, message_id, range(20)):
            assert (await http.get(path)).status_code == 200
        await wait_until(lambda: app.state.events.spooled == 20, what="events spooled")
        ready = await http.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["ready"] is True and ready.json()["events"]["mode"] == "spool"
        deps = await http.get("/health/deps")
        assert deps.status_code == 503
        body = deps.json()
        assert body["redis"]["ok"] is False and body["postgres"]["ok"] is True
        assert body["spool"]["mode"] == "spool" and "Redis write failed" in body["spool"]["reason"]
        assert body["spool"]["writable"] is True and body["spool"]["bytes"] > 0
        assert any(p.startswith("redis:") for p in body["problems"])


async def test_deps_are_200_when_all_is_well_and_name_each_unreachable_one(settings, free_port) -> None:
    async with running_edge(settings) as (_app, http):
        deps = await http.get("/health/deps")
        assert deps.status_code == 200 and deps.json()["ok"] is True
        assert deps.json()["redis"]["used_memory"] > 0
    settings = settings.replace(
        redis_url=f"redis://127.0.0.1:{free_port}/0",
        database_url=f"postgresql://postgres@127.0.0.1:{free_port}/none",
        redis_timeout_s=0.2,
    )
    async with running_edge(settings) as (_app, http):
        assert (await http.get("/ready")).status_code == 200  # nothing is being lost
        deps = await http.get("/health/deps")
        assert deps.status_code == 503
        problems = deps.json()["problems"]
        assert any(p.startswith("redis:") for p in problems)
        assert any(p.startswith("postgres:") for p in problems)


async def test_redis_near_its_maxmemory_makes_the_edge_spool_before_it_refuses(settings, pg, tmp_path, free_port):
    server = EmbeddedRedis(tmp_path / "redis", port=free_port, persist=False)
    server.start()
    client = Redis.from_url(server.url)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for n in range(20_000):
                pipe.set(f"filler:{n}", "x" * 40)
            await pipe.execute()
        used = (await client.info("memory"))["used_memory"]
        # Room for the filler and a little more: at 0.9 of it the edge must already be spooling.
        await client.config_set("maxmemory", str(int(used * 1.05)))
        settings = settings.replace(redis_url=server.url)
        message_id, _ = await create_message(pg, "email", "memory", [])
        async with running_edge(settings) as (app, http):
            events = app.state.events
            await wait_until(lambda: events.mode == "spool", what="spool mode from INFO memory")
            assert "maxmemory" in events.reason and events.memory_full
            for path in opens(settings, message_id, range(50)):
                assert (await http.get(path)).status_code == 200
            await wait_until(lambda: events.spooled == 50, what="events spooled")
            assert events.redis_errors == 0 and events.written == 0  # Redis never had to refuse a write
            assert await stream_events(client, settings) == []
            assert (await http.get("/ready")).status_code == 200
            deps = await http.get("/health/deps")
            assert deps.status_code == 503 and any("memory" in p for p in deps.json()["problems"])

            await client.flushdb()  # what the flusher's trimming and more memory do
            await wait_until(lambda: events.mode == "redis", what="leaving spool mode under the ratio")
            assert not events.memory_full
            replayed = await wait_for_events(client, settings, 50)
        assert sorted(e.profile_id for e in replayed) == list(range(50))
    finally:
        await client.aclose()
        server.stop()


@pytest.mark.parametrize("reuse_port", [True, False], ids=["another-edge", "another-program"])
def test_edge_refuses_a_port_in_use(settings, free_port, reuse_port) -> None:
    with socket.socket() as holder:
        if reuse_port:  # what Granian does: a second edge would share the port without a word
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", free_port))
        holder.listen()
        done = subprocess.run(
            [sys.executable, "-m", "edge.serve", "--port", str(free_port)],
            env=edge_env(settings),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and f"127.0.0.1:{free_port}" in done.stderr
    assert "in use" in done.stderr


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

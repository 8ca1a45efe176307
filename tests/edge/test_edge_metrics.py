"""`/metrics`: Prometheus text that adds up across Granian workers and includes the flushers and Redis itself."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re

import httpx
import pytest
from redis.asyncio import Redis

from edge.metrics_redis import RedisFacts
from tests.rigs.edge_helpers import real_edge, running_edge, wait_for_events
from tracker.contract.keys import (
    CONSUMER_GROUP,
    dead_letter_stream,
    event_stream,
    flusher_heartbeat_key,
    flusher_metrics_key,
    forwarder_heartbeat_key,
    forwarders_set_key,
    hooks_count_key,
)
from tracker.contract.tokens import Channel, TokenKind, mint
from tracker.domain.link_tables import Link, create_message
from tracker.ops.embedded import EmbeddedRedis


def value(text: str, sample: str) -> float:
    """The value of one sample line, e.g. `edge_requests_total{route="open",status="200"}`."""
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert match, f"{sample} not in /metrics"
    return float(match.group(1))


async def test_requests_events_and_refusals_are_counted(settings, redis, pg) -> None:
    message_id, version = await create_message(pg, "email", "metrics", [Link("https://example.com/m")])
    keys = settings.signing_keys
    async with running_edge(settings) as (_app, client):
        for profile in range(5):
            await client.get(f"/o/{mint(keys, 1, TokenKind.OPEN, Channel.EMAIL, message_id, profile)}")
        await client.get(f"/c/{mint(keys, 1, TokenKind.CLICK, Channel.EMAIL, message_id, 1, version, 0)}")
        await client.get("/c/forged-token")
        await client.get("/health")
        await wait_for_events(redis, settings, 6)
        text = (await client.get("/metrics")).text
    assert value(text, 'edge_requests_total{route="open",status="200"}') == 5
    assert value(text, 'edge_requests_total{route="click",status="302"}') == 1
    assert value(text, 'edge_requests_total{route="click",status="404"}') == 1
    assert value(text, 'edge_requests_total{route="health",status="200"}') == 1
    assert value(text, "edge_events_accepted_total") == 6
    assert value(text, "edge_events_written_total") == 6
    assert value(text, "edge_bad_tokens_total") == 1
    assert value(text, 'edge_cache_lookups_total{cache="link_table",result="miss"}') == 1
    assert value(text, "edge_batch_events_count") >= 1
    assert value(text, "edge_spooling") == 0


async def test_flusher_snapshots_are_served_with_a_consumer_label(settings, redis) -> None:
    stream = event_stream(settings.stream_prefix, 0)
    await redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
    await redis.xgroup_createconsumer(stream, CONSUMER_GROUP, "flusher-a")
    snapshot = {
        "consumer": "flusher-a", "batches": 7, "rows_written": 7000, "duplicates": 3, "dead_lettered": 1,
        "lag_s": 0.25, "commit_seconds": {"buckets": {"0.005": 2, "0.01": 6, "+Inf": 7}, "sum": 0.05, "count": 7},
        "at": 0, "step_seconds": {"judge": 1.5, "insert": 2.25},
    }  # fmt: skip
    await redis.set(flusher_metrics_key(settings.stream_prefix, "flusher-a"), json.dumps(snapshot))
    async with running_edge(settings) as (_app, client):
        text = (await client.get("/metrics")).text
    assert value(text, 'flusher_rows_written_total{consumer="flusher-a"}') == 7000
    assert value(text, 'flusher_lag_seconds{consumer="flusher-a"}') == 0.25
    assert value(text, 'flusher_commit_seconds_bucket{consumer="flusher-a",le="0.01"}') == 6
    assert value(text, 'flusher_commit_seconds_count{consumer="flusher-a"}') == 7
    assert value(text, 'flusher_step_seconds_total{consumer="flusher-a",step="insert"}') == 2.25


@pytest.mark.slow  # several seconds of a real outage or processes: the full run has it
async def test_counts_add_up_across_two_granian_workers(settings, redis, pg, free_port, tmp_path) -> None:
    message_id, _ = await create_message(pg, "email", "workers", [])
    keys = settings.signing_keys
    async with real_edge(settings, free_port, "--workers", "2", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom")):
        # New connections each time, so the kernel spreads them over both workers.
        for profile in range(60):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}") as http:
                token = mint(keys, 1, TokenKind.OPEN, Channel.EMAIL, message_id, profile)
                assert (await http.get(f"/o/{token}")).status_code == 200
        await asyncio.sleep(1.5)  # each worker folds its counts into the shared folder once a second
        for _ in range(6):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}") as http:
                text = (await http.get("/metrics")).text
            assert value(text, 'edge_requests_total{route="open",status="200"}') == 60
            assert value(text, "edge_events_accepted_total") == 60
        assert len(list((tmp_path / "prom").glob("counter_*.db"))) == 2  # both workers counted some


async def redis_with_facts(redis, settings) -> str:
    """Shard 0: three entries, two delivered to flusher-a and not acknowledged; one dead letter; one hook;
    a live flusher (in the group, with a heartbeat) and a live hooks worker with no hook group. Returns shard 0."""
    prefix = settings.stream_prefix
    shard0 = event_stream(prefix, 0)
    await redis.xgroup_create(shard0, CONSUMER_GROUP, id="0", mkstream=True)
    for _ in range(3):
        await redis.xadd(shard0, {b"e": b"x" * 100})
    await redis.xreadgroup(CONSUMER_GROUP, "flusher-a", {shard0: ">"}, count=2)
    await redis.xadd(dead_letter_stream(prefix), {b"e": b"\xc1", b"reason": b"undecodable entry"})
    await redis.set(flusher_heartbeat_key(prefix, "flusher-a"), b"{}", ex=30)
    await redis.sadd(forwarders_set_key(prefix), "forwarder-a", "forwarder-gone")
    await redis.set(forwarder_heartbeat_key(prefix, "forwarder-a"), b"{}", ex=30)
    await redis.set(hooks_count_key(prefix), 1)
    return shard0


async def test_redis_memory_persistence_streams_groups_and_heartbeats_are_served(settings, redis) -> None:
    shard0 = await redis_with_facts(redis, settings)
    dead = dead_letter_stream(settings.stream_prefix)
    info = await redis.info()
    async with running_edge(settings) as (_app, client):
        text = (await client.get("/metrics")).text
    assert value(text, "tracker_redis_up") == 1
    assert value(text, "tracker_redis_used_memory_bytes") > 0
    assert value(text, "tracker_redis_maxmemory_bytes") == info["maxmemory"]
    assert value(text, "tracker_redis_aof_enabled") == info["aof_enabled"]
    assert value(text, "tracker_redis_last_save_timestamp_seconds") >= info["rdb_last_save_time"]
    assert value(text, "tracker_redis_persistence_ok") == 1
    assert value(text, "tracker_redis_connected_clients") >= 1
    assert f'maxmemory_policy="{info["maxmemory_policy"]}"' in text
    events = f'kind="events",stream="{shard0}"'
    assert value(text, f"tracker_redis_stream_entries{{{events}}}") == 3
    assert value(text, f"tracker_redis_stream_memory_bytes{{{events}}}") > 300
    assert value(text, f'tracker_redis_stream_entries{{kind="dead",stream="{dead}"}}') == 1
    assert value(text, f'tracker_redis_group_pending_entries{{{events},group="flushers"}}') == 2
    assert value(text, f'tracker_redis_group_lag_entries{{{events},group="flushers"}}') == 1
    assert value(text, 'tracker_heartbeats_alive{program="flusher"}') == 1
    assert value(text, 'tracker_heartbeats_alive{program="forwarder"}') == 1  # forwarder-gone has no heartbeat
    assert value(text, "tracker_hooks_defined") == 1


async def test_an_unreachable_redis_is_a_zero_not_a_failed_scrape(settings, free_port) -> None:
    facts = RedisFacts(Redis.from_url(f"redis://127.0.0.1:{free_port}/0"), settings.stream_prefix, 2)
    text = await facts.text()
    assert value(text, "tracker_redis_up") == 0
    assert "tracker_redis_used_memory_bytes" not in text


@pytest.fixture
def own_redis(tmp_path, free_port):
    """A Redis server of this test's own: its INFO commandstats count only what the test does."""
    server = EmbeddedRedis(tmp_path / "redis", port=free_port, persist=False)
    try:
        yield server.start()
    finally:
        server.stop()


async def info_calls(redis: Redis) -> int:
    """INFO commands served so far, not counting the one asking (Redis counts a command after running it)."""
    return (await redis.info("commandstats")).get("cmdstat_info", {}).get("calls", 0)


async def test_redis_facts_are_cached_and_concurrent_scrapes_share_one_info(settings, own_redis) -> None:
    client = Redis.from_url(own_redis)
    try:
        cached = RedisFacts(client, settings.stream_prefix, 2, cache_s=3600)
        before = await info_calls(client)
        texts = await asyncio.gather(*(cached.text() for _ in range(5)))
        texts.append(await cached.text())
        assert await info_calls(client) - before == 1 + 1  # one read for six scrapes, plus the count above
        assert all(value(t, "tracker_redis_up") == 1 for t in texts)

        uncached = RedisFacts(client, settings.stream_prefix, 2, cache_s=0)
        before = await info_calls(client)
        for _ in range(3):
            await uncached.text()
        assert await info_calls(client) - before == 3 + 1  # past the cache time, each scrape reads again
    finally:
        await client.aclose()


async def test_a_scrape_costs_redis_at_most_one_info(settings, own_redis) -> None:
    settings = dataclasses.replace(settings, redis_url=own_redis)
    client = Redis.from_url(own_redis)
    try:
        async with running_edge(settings) as (_app, http):
            before = await info_calls(client)
            for _ in range(4):
                assert value((await http.get("/metrics")).text, "tracker_redis_up") == 1
            assert 1 <= await info_calls(client) - before - 1 <= 4
    finally:
        await client.aclose()

"""`/metrics`: Prometheus text that adds up across Granian workers and includes the flushers."""

from __future__ import annotations

import asyncio
import json
import re

import httpx

from tests.edge_helpers import real_edge, running_edge, wait_for_events
from tracker.contract.keys import CONSUMER_GROUP, event_stream, flusher_metrics_key
from tracker.contract.tokens import Channel, TokenKind, mint
from tracker.domain.link_tables import Link, create_message


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
        "at": 0,
    }  # fmt: skip
    await redis.set(flusher_metrics_key(settings.stream_prefix, "flusher-a"), json.dumps(snapshot))
    async with running_edge(settings) as (_app, client):
        text = (await client.get("/metrics")).text
    assert value(text, 'flusher_rows_written_total{consumer="flusher-a"}') == 7000
    assert value(text, 'flusher_lag_seconds{consumer="flusher-a"}') == 0.25
    assert value(text, 'flusher_commit_seconds_bucket{consumer="flusher-a",le="0.01"}') == 6
    assert value(text, 'flusher_commit_seconds_count{consumer="flusher-a"}') == 7


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

"""Flusher metrics: counted per batch, published to Redis as a JSON snapshot with a TTL."""

from __future__ import annotations

import json
import logging

import msgspec
from redis.asyncio import Redis

from flusher.metrics import BUCKET_LABELS, FlusherMetrics, MetricsPublisher, group_lag_s, stop_summary
from tests.rigs.flusher_helpers import drain, event, make_message, make_profiles, push, push_raw
from tracker.contract.keys import CONSUMER_GROUP, ENTRY_FIELD, event_stream, event_streams, flusher_metrics_key

SNAPSHOT_FIELDS = {"consumer", "batches", "rows_written", "duplicates", "dead_lettered", "lag_s", "commit_seconds",
                   "at", "verdicts", "step_seconds"}  # fmt: skip
# A batch's steps, in the order it runs them (flusher.sink); no click settles and no verdict turns here.
STEPS = ["check_messages", "redeliveries", "partitions", "judge", "rows", "copy", "insert", "settle_queue",
         "recipient_firsts", "profile_effects", "message_counters", "rollups", "verdict_changes", "active_days",
         "commit"]  # fmt: skip


async def test_a_burst_flusher_publishes_rows_duplicates_dead_letters_and_commit_latency(settings, redis, pg):
    profiles = await make_profiles(pg, 4)
    message = await make_message(pg)
    events = [event(message, profiles[n % 4], "opened") for n in range(40)]
    await push(redis, settings, events, per_entry=10)
    await push(redis, settings, [events[0]])  # a re-send of an event already stored: skipped as a duplicate
    await push_raw(redis, settings, {ENTRY_FIELD: b"\xc1 poison"})
    # Small batches, so that the histogram sees several commits.
    flusher = await drain(settings, consumer="metrics-test", batch_max_events=10)

    key = flusher_metrics_key(settings.stream_prefix, "metrics-test")
    snapshot = json.loads(await redis.get(key))
    assert set(snapshot) == SNAPSHOT_FIELDS
    assert snapshot["consumer"] == "metrics-test"
    assert (snapshot["rows_written"], snapshot["duplicates"], snapshot["dead_lettered"]) == (40, 1, 1)
    assert snapshot["batches"] == flusher.stats["batches"] >= 2
    assert snapshot["lag_s"] == 0.0  # drained: nothing pending, nothing unread
    commits = snapshot["commit_seconds"]
    assert list(commits["buckets"]) == list(BUCKET_LABELS)
    assert BUCKET_LABELS == ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf")
    counts = list(commits["buckets"].values())
    assert counts == sorted(counts), "bucket counts are cumulative"
    assert counts[-1] == commits["count"] == snapshot["batches"]
    assert 0 < commits["sum"] < 5 * commits["count"]
    assert 0 < await redis.pttl(key) <= 15_000  # three publish intervals of 5 s
    # Where the batches' time went, step by step: every step ran and took some time.
    assert list(snapshot["step_seconds"]) == STEPS
    assert all(seconds > 0 for seconds in snapshot["step_seconds"].values())


async def test_a_stopped_flusher_says_what_it_did_in_one_readable_line(settings, redis, pg, caplog):
    profiles = await make_profiles(pg, 2)
    message = await make_message(pg)
    events = [event(message, profiles[n % 2], "opened") for n in range(1_200)]
    await push(redis, settings, events, per_entry=100)
    await push(redis, settings, events[:3])  # re-sent: duplicates
    await push_raw(redis, settings, {ENTRY_FIELD: b"\xc1 poison"})
    with caplog.at_level(logging.INFO, logger="flusher"):
        flusher = await drain(settings, consumer="summary-test", batch_max_events=500)
    [line] = [r.getMessage() for r in caplog.records if " stopped: " in r.getMessage()]
    batches, entries = flusher.stats["batches"], flusher.stats["entries"]
    # 1,204 events: the poison entry counts as one (undecodable), dead-lettered.
    assert line == (f"flusher summary-test stopped: 1,204 events in {batches} batches ({entries} stream entries):"
                    " 1,200 stored, 3 duplicates, 1 dead-lettered; 0 clicks settled;"
                    f" {flusher.stats['trimmed']} entries trimmed")  # fmt: skip
    assert batches >= 3 and entries >= 14 and "{" not in line


def test_the_stop_line_counts_in_words():
    one = dict.fromkeys(("batches", "entries", "events", "stored", "duplicates", "dead_lettered", "trimmed",
                         "settled"), 1)  # fmt: skip
    assert stop_summary("f1", one) == ("flusher f1 stopped: 1 event in 1 batch (1 stream entry): 1 stored,"
                                       " 1 duplicate, 1 dead-lettered; 1 click settled; 1 entry trimmed")  # fmt: skip


def test_commit_latency_buckets_are_cumulative_with_inclusive_upper_bounds():
    metrics = FlusherMetrics("c")
    for seconds in (0.001, 0.005, 0.007, 0.3, 7.0):
        metrics.observe_commit(seconds)
    snapshot = msgspec.to_builtins(metrics.snapshot(at=123.0))
    assert snapshot["commit_seconds"]["buckets"] == {
        "0.005": 2, "0.01": 3, "0.025": 3, "0.05": 3, "0.1": 3, "0.25": 3, "0.5": 4, "1": 4, "2.5": 4, "5": 4,
        "+Inf": 5,
    }  # fmt: skip
    assert snapshot["commit_seconds"]["count"] == 5
    assert abs(snapshot["commit_seconds"]["sum"] - 7.313) < 1e-9
    assert snapshot["at"] == 123.0


async def test_lag_is_the_age_of_the_oldest_pending_entry_else_of_the_oldest_unread_one(settings, redis):
    streams = event_streams(settings.stream_prefix, 2)
    for stream in streams:
        await redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
    assert await group_lag_s(redis, streams) == 0.0
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros // 1000
    shard0, shard1 = event_stream(settings.stream_prefix, 0), event_stream(settings.stream_prefix, 1)
    await redis.xadd(shard1, {b"e": b"x"}, id=f"{now_ms - 3_000}-0")
    assert 2.9 <= await group_lag_s(redis, streams) < 5  # unread for 3 s
    await redis.xadd(shard0, {b"e": b"x"}, id=f"{now_ms - 8_000}-0")
    await redis.xadd(shard0, {b"e": b"x"}, id=f"{now_ms - 500}-0")
    await redis.xreadgroup(CONSUMER_GROUP, "reader", {shard0: ">"}, count=1)
    assert 7.9 <= await group_lag_s(redis, streams) < 10  # pending for 8 s, the oldest of all


async def test_publishing_to_an_unreachable_redis_is_logged_once_and_never_raises(settings, free_port, caplog):
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port}/0", socket_connect_timeout=1)
    publisher = MetricsPublisher(dead, settings.stream_prefix, event_streams(settings.stream_prefix, 2),
                                 FlusherMetrics("c"), interval_s=0.1)  # fmt: skip
    try:
        with caplog.at_level(logging.WARNING, logger="flusher.metrics"):
            assert await publisher.publish() is False
            assert await publisher.publish() is False
    finally:
        await dead.aclose()
    assert publisher.failures == 2
    assert len([r for r in caplog.records if r.name == "flusher.metrics"]) == 1

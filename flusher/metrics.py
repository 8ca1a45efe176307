"""What one flusher has done, published to Redis as a JSON snapshot for the edge's /metrics and `tracker stats`.

The worker counts into `FlusherMetrics` (plain integers, no I/O on its path);
`MetricsPublisher` writes a snapshot every few seconds and once more at exit to
`flusher_metrics_key(prefix, consumer)`, with a TTL of three intervals so a
dead flusher's numbers disappear on their own. The snapshot is a
tracker.contract.snapshots.FlusherMetricsSnapshot:

    {"consumer": str, "batches": int, "rows_written": int, "duplicates": int, "dead_lettered": int,
     "lag_s": float, "commit_seconds": {"buckets": {"0.005": int, ..., "+Inf": int}, "sum": float, "count": int},
     "at": unix seconds}

Bucket counts are cumulative, as Prometheus histograms are, so the edge can
render them as they are. `lag_s` is the group's lag over every shard: the age
of the oldest entry still pending, or else of the oldest entry not yet read,
measured on Redis' clock (stream ids are Redis' milliseconds).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tracker.contract.keys import CONSUMER_GROUP, flusher_metrics_key
from tracker.contract.snapshots import CommitSeconds, FlusherMetricsSnapshot, encode
from tracker.streams.retry import error_text, is_out_of_memory

log = logging.getLogger("flusher.metrics")

COMMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BUCKET_LABELS = (*(f"{bound:g}" for bound in COMMIT_BUCKETS), "+Inf")
PUBLISH_INTERVAL_S = 5.0
_ERROR_LOG_EVERY_S = 60.0


class StepTimes:
    """Seconds spent in each named step of storing a batch (flusher.sink), summed over the process's life.

    Shared by a flusher's sinks; the snapshot publishes it, so `/metrics` and `tracker stats` show where
    a batch's time goes without a profiler. Steps appear in the order a batch first runs them.
    """

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started


class FlusherMetrics:
    """Counters and the commit-latency histogram of one flusher process."""

    def __init__(self, consumer: str) -> None:
        self.consumer = consumer
        self.batches = 0
        self.rows_written = 0
        self.duplicates = 0
        self.dead_lettered = 0
        self.lag_s = 0.0
        # Per bucket, not cumulative: one increment per observation; the snapshot sums them up.
        self._bucket_hits = [0] * (len(COMMIT_BUCKETS) + 1)
        self.commit_sum = 0.0
        self.commit_count = 0
        # (verdict, reason) -> events; the worker hands in its judge's own counter (flusher.judging).
        self.verdicts: Counter[tuple[str, str]] = Counter()
        self.steps = StepTimes()  # the worker hands its sinks' own

    def observe_commit(self, seconds: float) -> None:
        self._bucket_hits[bisect.bisect_left(COMMIT_BUCKETS, seconds)] += 1
        self.commit_sum += seconds
        self.commit_count += 1

    def batch_done(self, rows_written: int, duplicates: int, dead_lettered: int) -> None:
        self.batches += 1
        self.rows_written += rows_written
        self.duplicates += duplicates
        self.dead_lettered += dead_lettered

    def snapshot(self, at: float | None = None) -> FlusherMetricsSnapshot:
        cumulative, running = {}, 0
        for label, hits in zip(BUCKET_LABELS, self._bucket_hits, strict=True):
            running += hits
            cumulative[label] = running
        return FlusherMetricsSnapshot(
            consumer=self.consumer,
            batches=self.batches,
            rows_written=self.rows_written,
            duplicates=self.duplicates,
            dead_lettered=self.dead_lettered,
            lag_s=round(self.lag_s, 3),
            commit_seconds=CommitSeconds(buckets=cumulative, sum=self.commit_sum, count=self.commit_count),
            at=time.time() if at is None else at,
            verdicts={f"{verdict}/{reason}": count for (verdict, reason), count in sorted(self.verdicts.items())},
            step_seconds={name: round(seconds, 6) for name, seconds in self.steps.seconds.items()},
        )


def _counted(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def stop_summary(consumer: str, stats: dict[str, int]) -> str:
    """The line a flusher logs when it stops: what it did over its life, in words an operator reads."""
    s = stats
    return (f"flusher {consumer} stopped: {_counted(s['events'], 'event', 'events')} in "
            f"{_counted(s['batches'], 'batch', 'batches')} ({_counted(s['entries'], 'stream entry', 'stream entries')}"
            f"): {s['stored']:,} stored, {_counted(s['duplicates'], 'duplicate', 'duplicates')}, "
            f"{s['dead_lettered']:,} dead-lettered; {_counted(s['settled'], 'click', 'clicks')} settled; "
            f"{_counted(s['trimmed'], 'entry', 'entries')} trimmed")  # fmt: skip


async def group_lag_s(redis: Redis, streams: list[str]) -> float:
    """Age in seconds of the oldest entry the group has not finished with, over all `streams` (0: none)."""
    # TIME alone: a cluster client refuses keyless commands in a pipeline.
    seconds, micros = await redis.time()
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xinfo_groups(stream)
        replies = [None, *await pipe.execute(raise_on_error=False)]
    now_ms = seconds * 1000 + micros / 1000
    oldest_ms: float | None = None
    async with redis.pipeline(transaction=False) as pipe:
        for stream, groups in zip(streams, replies[1:], strict=True):
            group = _our_group(groups)
            if group is None:
                continue  # no such stream yet (an exception from XINFO) or no group on it
            if group["pending"]:
                pipe.xpending(stream, CONSUMER_GROUP)
            else:
                # Exclusive range: the first entry after the last one handed out.
                pipe.xrange(stream, min=b"(" + _bytes(group["last-delivered-id"]), count=1)
        for reply in await pipe.execute(raise_on_error=False):
            first = _first_id(reply)
            if first is not None:
                ms = int(first.split(b"-", 1)[0])
                oldest_ms = ms if oldest_ms is None else min(oldest_ms, ms)
    return 0.0 if oldest_ms is None else max(0.0, (now_ms - oldest_ms) / 1000)


def _our_group(groups: Any) -> dict | None:
    if not isinstance(groups, list):
        return None
    for group in groups:
        if _bytes(group.get("name", b"")) == CONSUMER_GROUP.encode():
            return group
    return None


def _first_id(reply: Any) -> bytes | None:
    if isinstance(reply, dict):  # XPENDING summary
        return _bytes(reply["min"]) if reply.get("min") else None
    if isinstance(reply, list) and reply:  # XRANGE
        return _bytes(reply[0][0])
    return None


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


class MetricsPublisher:
    """Writes `metrics` to Redis every `interval_s` (run it as a task) and on `publish()`.

    A failed write is logged at most once a minute and otherwise ignored: the
    metrics are an operator's view, never a reason to hold or stop the flusher.
    """

    def __init__(self, redis: Redis, prefix: str, streams: list[str], metrics: FlusherMetrics,
                 interval_s: float = PUBLISH_INTERVAL_S) -> None:  # fmt: skip
        self.redis = redis
        self.streams = streams
        self.metrics = metrics
        self.interval_s = interval_s
        self.key = flusher_metrics_key(prefix, metrics.consumer)
        self.ttl_ms = max(1, int(interval_s * 3 * 1000))
        self._last_error_log = float("-inf")
        self._failing = False
        self.failures = 0

    async def run(self) -> None:
        while True:
            await self.publish()
            await asyncio.sleep(self.interval_s)

    async def publish(self) -> bool:
        """Measure the lag and write one snapshot; False (and maybe a log line) when Redis failed."""
        try:
            self.metrics.lag_s = await group_lag_s(self.redis, self.streams)
            snapshot = encode(self.metrics.snapshot())
            try:
                await self.redis.set(self.key, snapshot, px=self.ttl_ms)
            except RedisError as exc:
                if not is_out_of_memory(exc):
                    raise
                await self.redis.pexpire(self.key, self.ttl_ms)  # Redis is full: keep the last numbers shown
                raise
            if self._failing:  # said only after a failure that was logged: a pair of lines a minute at most
                self._failing = False
                log.info("publishing metrics to %s works again", self.key)
            return True
        except (RedisError, OSError) as exc:
            failure: BaseException = exc
        except Exception as exc:  # a bug here must not take the flusher down with it
            failure = exc
        self.failures += 1
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_EVERY_S:
            self._last_error_log = now
            self._failing = True
            log.warning("publishing metrics to %s failed (%d failures so far, logged once a minute): %s",
                        self.key, self.failures, error_text(failure))  # fmt: skip
        return False

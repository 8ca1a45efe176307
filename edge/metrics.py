"""`GET /metrics`: Prometheus text for the edge (all Granian workers) and the flushers.

The hot path only bumps plain ints (`state.requests`, `state.counters`, the
buffer's and caches' counts). Once a second, and before each scrape, this
module turns their growth into prometheus_client metrics. With several
workers, `edge serve` sets PROMETHEUS_MULTIPROC_DIR so that every worker
writes its values to a shared folder and any worker's /metrics sums them all.
Flushers publish JSON snapshots to Redis (tracker.contract.snapshots); the edge
finds them through the consumer groups and renders them too; action hooks
likewise (edge/metrics_hooks.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from edge.metrics_hooks import hooks_text
from edge.metrics_redis import RedisFacts
from edge.prom_text import sample
from tracker.contract.keys import CONSUMER_GROUP, event_streams, flusher_metrics_key
from tracker.contract.snapshots import FlusherMetricsSnapshot, decode

log = logging.getLogger("edge.metrics")
_SYNC_EVERY_S = 1.0


class EdgeMetrics:
    def __init__(self, state: Any) -> None:
        self.state = state
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # In multiprocess mode the values live in the shared folder, not in a registry.
        self.registry = CollectorRegistry()
        registry = None if self.multiprocess else self.registry
        self.requests = Counter(
            "edge_requests", "Responses by route and status", ["route", "status"], registry=registry
        )
        self.counted = {
            "events_accepted": Counter("edge_events_accepted", "Events accepted into the buffer", registry=registry),
            "events_written": Counter("edge_events_written", "Events written to the streams", registry=registry),
            "events_spooled": Counter("edge_events_spooled", "Events written to the spool", registry=registry),
            "events_replayed": Counter("edge_events_replayed", "Spooled events replayed", registry=registry),
            "spool_dropped": Counter(
                "edge_spool_dropped", "Events dropped: the spool full or its disk failing", registry=registry
            ),
            "bad_tokens": Counter("edge_bad_tokens", "Requests with a bad or wrong-kind token", registry=registry),
            "unknown_links": Counter("edge_unknown_links", "Valid tokens for no known link", registry=registry),
            "lookup_errors": Counter("edge_lookup_errors", "Link lookups that failed", registry=registry),
            "lookups_refused": Counter(
                "edge_lookups_refused", "Short-link lookups refused: too many in flight", registry=registry
            ),
            "redis_errors": Counter("edge_redis_errors", "Batch writes that failed on Redis", registry=registry),
        }
        self.cache = Counter("edge_cache_lookups", "In-process cache lookups", ["cache", "result"], registry=registry)
        self.spool_bytes = Gauge(
            "edge_spool_bytes", "Bytes in this edge's spool", registry=registry, multiprocess_mode="livesum"
        )
        self.spooling = Gauge(
            "edge_spooling", "1 while events go to the spool", registry=registry, multiprocess_mode="livemax"
        )
        self.held_reads = Gauge(
            "edge_held_reads", "Read beacons held open", registry=registry, multiprocess_mode="livesum"
        )
        self.batch_events = Histogram(
            "edge_batch_events", "Events per stream write", registry=registry,
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000),
        )  # fmt: skip
        self.flush_seconds = Histogram(
            "edge_flush_seconds", "Latency of one stream write (MULTI/EXEC of XADDs)", registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )  # fmt: skip
        self.provider_reports = Counter(
            "edge_webhook_reports", "Delivery reports by channel, provider and outcome",
            ["channel", "provider", "outcome"], registry=registry,
        )  # fmt: skip
        self.provider_report_counts: Any = {}  # the provider report routes' Counter, set by the app factory
        self._seen: dict[Any, int] = {}
        self.redis_facts = RedisFacts(state.redis, state.settings.stream_prefix, state.settings.stream_shards)
        self._task: asyncio.Task | None = None

    def observe_batch(self, events: int, seconds: float) -> None:
        self.batch_events.observe(events)
        self.flush_seconds.observe(seconds)

    def _grow(self, key: Any, metric: Any, now: int) -> None:
        before = self._seen.get(key, 0)
        if now > before:
            metric.inc(now - before)
            self._seen[key] = now

    def sync(self) -> None:
        """Bring the Prometheus values up to the plain counters."""
        state = self.state
        for (route, status), count in list(state.requests.items()):
            self._grow(("req", route, status), self.requests.labels(route, str(status)), count)
        events, counters = state.events, state.counters
        plain = {
            "events_accepted": events.accepted,
            "events_written": events.written,
            "events_spooled": events.spooled,
            "events_replayed": events.replayed,
            "spool_dropped": state.spool.dropped,
            "bad_tokens": counters.bad_tokens,
            "unknown_links": counters.unknown_links,
            "lookup_errors": counters.lookup_errors,
            "lookups_refused": counters.lookups_refused,
            "redis_errors": events.redis_errors,
        }
        for name, count in plain.items():
            self._grow(name, self.counted[name], count)
        for cache_name, cache in (("link_table", state.links), ("short_link", state.short_links)):
            self._grow((cache_name, "hit"), self.cache.labels(cache_name, "hit"), cache.hits)
            self._grow((cache_name, "miss"), self.cache.labels(cache_name, "miss"), cache.misses)
        for (channel, provider, outcome), count in list(self.provider_report_counts.items()):
            counter = self.provider_reports.labels(channel, provider, outcome)
            self._grow(("report", channel, provider, outcome), counter, count)
        self.spool_bytes.set(state.spool.size)
        self.spooling.set(1 if events.mode != "redis" else 0)
        self.held_reads.set(counters.held_reads)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sync_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sync()
        if self.multiprocess:
            prometheus_multiprocess.mark_process_dead(os.getpid())

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(_SYNC_EVERY_S)
            try:
                self.sync()
            except Exception:  # metrics must never take the edge down
                log.exception("metrics sync failed")

    async def endpoint(self, request: Request) -> Response:
        self.sync()
        if self.multiprocess:
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry)
        else:
            registry = self.registry
        text = generate_latest(registry).decode()
        text += await self._flusher_text()
        text += await self.redis_facts.text()
        settings = self.state.settings
        text += await hooks_text(self.state.redis, settings.stream_prefix, settings.stream_shards)
        return Response(text, media_type=CONTENT_TYPE_LATEST, headers={"cache-control": "no-store"})

    async def _flusher_text(self) -> str:
        """The flushers' published snapshots, found through the consumer groups."""
        settings = self.state.settings
        redis = self.state.redis
        try:
            async with asyncio.timeout(1.0):
                consumers: set[str] = set()
                for stream in event_streams(settings.stream_prefix, settings.stream_shards):
                    try:
                        for info in await redis.xinfo_consumers(stream, CONSUMER_GROUP):
                            name = info["name"]
                            consumers.add(name.decode() if isinstance(name, bytes) else name)
                    except RedisError:
                        continue  # no group on this shard yet
                keys = [flusher_metrics_key(settings.stream_prefix, name) for name in sorted(consumers)]
                raws = await redis.mget(keys) if keys else []
        except (RedisError, OSError, TimeoutError) as exc:
            return f"# flusher metrics unavailable: {type(exc).__name__}\n"
        snapshots = [snapshot for raw in raws if (snapshot := decode(raw, FlusherMetricsSnapshot))]
        return render_flusher_snapshots(snapshots)


_FLUSHER_SERIES = (
    ("batches", "flusher_batches_total", "counter", "Batches committed"),
    ("rows_written", "flusher_rows_written_total", "counter", "Event rows written"),
    ("duplicates", "flusher_duplicates_total", "counter", "Events skipped as duplicates"),
    ("dead_lettered", "flusher_dead_lettered_total", "counter", "Entries or events moved to the dead letters"),
    ("lag_s", "flusher_lag_seconds", "gauge", "Age of the oldest entry not yet committed"),
)


def render_flusher_snapshots(snapshots: list[FlusherMetricsSnapshot]) -> str:
    """Prometheus text for flusher snapshots, one `consumer` label each."""
    if not snapshots:
        return ""
    lines = []
    now = time.time()
    series = [*_FLUSHER_SERIES, ("at", "flusher_snapshot_age_seconds", "gauge", "Seconds since the flusher published")]
    for key, name, kind, help_text in series:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for snap in snapshots:
            at = now if snap.at is None else snap.at
            value = float(getattr(snap, key)) if key != "at" else max(0.0, now - at)
            lines.append(sample(name, {"consumer": snap.consumer}, value))
    lines += ["# HELP flusher_commit_seconds Latency of one batch's Postgres commit",
              "# TYPE flusher_commit_seconds histogram"]  # fmt: skip
    for snap in snapshots:
        consumer = {"consumer": snap.consumer}
        histogram = snap.commit_seconds
        for bound, count in histogram.buckets.items():
            lines.append(sample("flusher_commit_seconds_bucket", {**consumer, "le": bound}, count))
        lines.append(sample("flusher_commit_seconds_sum", consumer, histogram.sum))
        lines.append(sample("flusher_commit_seconds_count", consumer, histogram.count))
    lines += ["# HELP flusher_verdicts_total Opens and clicks judged, by verdict and reason (once per reason)",
              "# TYPE flusher_verdicts_total counter"]  # fmt: skip
    for snap in snapshots:
        for key, count in snap.verdicts.items():
            verdict, _, reason = key.partition("/")
            lines.append(sample("flusher_verdicts_total", {"consumer": snap.consumer, "verdict": verdict,
                                                            "reason": reason}, count))  # fmt: skip
    lines += ["# HELP flusher_step_seconds_total Seconds spent in each step of storing a batch (flusher.sink)",
              "# TYPE flusher_step_seconds_total counter"]  # fmt: skip
    for snap in snapshots:
        for step, seconds in snap.step_seconds.items():
            lines.append(sample("flusher_step_seconds_total", {"consumer": snap.consumer, "step": step}, seconds))
    return "\n".join(lines) + "\n"

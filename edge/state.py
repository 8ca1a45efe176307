"""Everything an edge process holds: built by the app factory, opened and closed by its lifespan."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import asyncpg
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from edge.event_buffer import EventBuffer
from edge.link_cache import link_cache
from edge.metrics import EdgeMetrics
from edge.request_facts import RequestFacts
from edge.short_link_cache import short_link_cache
from edge.spool import Spool
from tracker.config import Settings
from tracker.contract.events import EventIds
from tracker.domain.analytics.report_snapshots import ReportSnapshots
from tracker.streams.cluster import open_cluster

log = logging.getLogger("edge")


@dataclass
class EdgeCounters:
    """Plain counters for what the edge refused; /metrics exposes them."""

    bad_tokens: int = 0
    unknown_links: int = 0
    lookup_errors: int = 0
    held_reads: int = 0  # read beacons open right now
    bad_site_hits: int = 0
    lookups_refused: int = 0  # /s/ misses answered 503 at once: too many lookups in flight


class EdgeState:
    def __init__(self, settings: Settings) -> None:
        settings.require("redis_url", "database_url", "signing_keys")
        self.settings = settings
        # No client-side retries: a failed batch goes to the spool at once, and a retried
        # MULTI/EXEC whose reply was lost would add its events twice. (On a cluster, MOVED and
        # ASK are still followed: a redirected command did not run.)
        self.redis: Redis = open_edge_redis(settings, max_connections=64)
        # Event writes get a pool of their own: lookups (a flood of /s/ codes, say) that use up
        # `self.redis` must not push real opens and clicks into the spool.
        self.events_redis: Redis = open_edge_redis(settings, max_connections=settings.edge.events_redis_connections)
        self.pg_pool: asyncpg.Pool | None = None
        self.closing = False  # the lifespan is shutting down: /ready answers 503
        self.spool = Spool(settings.edge.spool_dir, settings.edge.spool_max_bytes, settings.edge.spool_fsync)
        self.events = EventBuffer(settings, self.events_redis, self.spool)
        pool = _LazyPool(self)
        self.links = link_cache(settings, self.redis, pool, self.redis_is_down)
        self.short_links = short_link_cache(settings, self.redis, pool, self.redis_is_down)
        self.facts = RequestFacts(settings.edge.trust_forwarded_for)
        self.ids = EventIds()
        self.counters = EdgeCounters()
        # (route, status) -> responses; plain ints on the hot path, read by /metrics.
        self.requests: Counter[tuple[str, int]] = Counter()
        self.metrics = EdgeMetrics(self)
        self.events.on_batch = self.metrics.observe_batch
        # The list reports' snapshots: which refreshes this process runs in the background.
        self.report_snapshots = ReportSnapshots(
            settings.edge.analytics_snapshot_max_age_s, settings.edge.analytics_snapshot_sync_after_s
        )

    def redis_is_down(self) -> bool:
        return self.events.redis_down

    async def open(self) -> None:
        # The pool connects lazily (min_size=0): an edge starts and serves pixels while Postgres is down.
        self.pg_pool = await asyncpg.create_pool(
            self.settings.database_url, min_size=0, max_size=self.settings.edge.pg_pool_size, timeout=5
        )
        await self.events.start()
        await self.metrics.start()
        # The whole settings (a few kB, secrets hidden) only on demand: the start line says what matters.
        log.debug("edge worker ready: %r", self.settings)

    async def close(self) -> None:
        self.closing = True
        await self.events.close()
        await self.metrics.close()
        await self.report_snapshots.settled()  # a refresh in flight finishes before its pool closes
        if self.pg_pool is not None:
            await self.pg_pool.close()
        await self.redis.aclose()
        await self.events_redis.aclose()


def open_edge_redis(settings: Settings, *, max_connections: int) -> Redis:
    """A client without retries; on a cluster (TRACKER_REDIS_CLUSTER) `max_connections` is per node."""
    options = dict(
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        max_connections=max_connections,
        retry=Retry(NoBackoff(), 0),
    )
    if settings.redis_cluster:
        return open_cluster(settings.redis_url, **options)
    return Redis.from_url(settings.redis_url, **options)


class _LazyPool:
    """Lets the link cache be built before the lifespan has created the pool."""

    def __init__(self, state: EdgeState) -> None:
        self.state = state

    def acquire(self):
        assert self.state.pg_pool is not None, "edge used outside its lifespan"
        return self.state.pg_pool.acquire()

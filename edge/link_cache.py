"""Link-table versions for redirects: in-process LRU, then Redis, then Postgres.

Versions are immutable, so a cached copy never goes stale and the in-process
LRU needs no TTL; only its size is bounded. A miss in process asks Redis (one
GET), then Postgres (and refills Redis). Concurrent misses for the same version
share one lookup. Versions that do not exist are remembered for a short while,
so a burst of clicks on a deleted message does not hammer Postgres.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from edge.responses import redirect_start
from tracker.keys import link_table_key
from tracker.link_tables import LinkTable, decode_link_table, encode_link_table, load_version
from tracker.settings import Settings
from tracker.urls import BadURL, check_redirect_url

log = logging.getLogger("edge.links")


class CachedLinks:
    """A link table ready for redirects: each link's 302 start message, built once."""

    __slots__ = ("redirects", "table")

    def __init__(self, table: LinkTable) -> None:
        self.table = table
        redirects: list[dict | None] = []
        for link in table.links:
            try:
                redirects.append(redirect_start(check_redirect_url(link.url).encode("ascii")))
            except BadURL:
                # Postgres' check constraint makes this unreachable; a bad row never redirects.
                redirects.append(None)
        self.redirects = redirects


class LinkCache:
    def __init__(self, settings: Settings, redis: Redis, pg_pool: Any, redis_down: Callable[[], bool]) -> None:
        self.redis = redis
        self.pg_pool = pg_pool
        self.prefix = settings.stream_prefix
        self.size = settings.link_cache_size
        self.redis_ttl = settings.link_cache_redis_ttl_s
        self.negative_ttl = settings.link_cache_negative_ttl_s
        # While the event buffer knows Redis is down, misses go straight to Postgres
        # instead of waiting for a connect timeout on every click.
        self.redis_down = redis_down
        self._entries: OrderedDict[tuple[int, int], CachedLinks] = OrderedDict()
        self._missing: dict[tuple[int, int], float] = {}
        self._inflight: dict[tuple[int, int], asyncio.Future[CachedLinks | None]] = {}
        self.hits = 0
        self.misses = 0

    def cached(self, message_id: int, version: int) -> CachedLinks | None:
        """The in-process copy, without any I/O (the hot path's first try)."""
        key = (message_id, version)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return entry

    async def fetch(self, message_id: int, version: int) -> CachedLinks | None:
        key = (message_id, version)
        entry = self.cached(message_id, version)
        if entry is not None:
            return entry
        self.misses += 1
        missing_until = self._missing.get(key)
        if missing_until is not None:
            if missing_until > time.monotonic():
                return None
            del self._missing[key]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[CachedLinks | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            entry = await self._load(message_id, version)
            future.set_result(entry)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters, if any, get it through shield
            raise
        finally:
            del self._inflight[key]
        return entry

    async def _load(self, message_id: int, version: int) -> CachedLinks | None:
        redis_key = link_table_key(self.prefix, message_id, version)
        table = None
        use_redis = not self.redis_down()
        if use_redis:
            try:
                raw = await self.redis.get(redis_key)
                table = decode_link_table(raw) if raw is not None else None
            except (RedisError, OSError) as exc:
                log.warning("link cache: Redis unavailable (%r), reading Postgres", exc)
        from_redis = table is not None
        if table is None:
            async with self.pg_pool.acquire() as conn:
                table = await load_version(conn, message_id, version)
        if table is None:
            if self.negative_ttl:
                self._missing[(message_id, version)] = time.monotonic() + self.negative_ttl
                if len(self._missing) > self.size:
                    self._missing.clear()
            return None
        if not from_redis and use_redis:
            try:
                await self.redis.set(redis_key, encode_link_table(table), ex=self.redis_ttl)
            except (RedisError, OSError) as exc:
                log.warning("link cache: could not refill Redis (%r)", exc)
        entry = CachedLinks(table)
        self._entries[(message_id, version)] = entry
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return entry

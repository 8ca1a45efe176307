"""A read-through cache in three tiers: this process (LRU), then Redis, then Postgres.

Used for link-table versions and SMS short codes: both are immutable once
written, so an in-process copy never goes stale and needs no TTL, only a size
bound. Concurrent misses for one key share one lookup; keys that do not exist
are remembered for a short while so a burst for a missing key does not reach
Postgres each time; with `negative_redis_ttl_s`, Redis remembers them too (an
empty value), so the other edge processes skip Postgres as well. While Redis is
known to be down, misses go straight to Postgres instead of waiting for a
connect timeout each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("edge.cache")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TieredCache(Generic[K, V]):
    def __init__(
        self,
        name: str,
        size: int,
        negative_ttl_s: float,
        redis: Redis,
        redis_ttl_s: int,
        redis_key: Callable[[K], str],
        from_redis: Callable[[bytes], Any],
        to_redis: Callable[[Any], bytes],
        from_postgres: Callable[[K], Awaitable[Any]],
        ready: Callable[[Any], V],
        redis_down: Callable[[], bool],
        negative_redis_ttl_s: int = 0,
    ) -> None:
        """`from_postgres` returns the stored form (or None); `ready` turns it into what callers use."""
        self.name = name
        self.size = size
        self.negative_ttl_s = negative_ttl_s
        self.redis = redis
        self.redis_ttl_s = redis_ttl_s
        self.redis_key = redis_key
        self.from_redis = from_redis
        self.to_redis = to_redis
        self.from_postgres = from_postgres
        self.ready = ready
        self.redis_down = redis_down
        self.negative_redis_ttl_s = negative_redis_ttl_s
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._missing: dict[K, float] = {}
        self._inflight: dict[K, asyncio.Future[V | None]] = {}
        self.hits = 0
        self.misses = 0

    def cached(self, key: K) -> V | None:
        """The in-process copy, without any I/O (the hot path's first try)."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return entry

    def missing(self, key: K) -> bool:
        """Known not to exist, a short while ago (no I/O)."""
        missing_until = self._missing.get(key)
        return missing_until is not None and missing_until > time.monotonic()

    async def fetch(self, key: K) -> V | None:
        entry = self.cached(key)
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
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            entry = await self._load(key)
            future.set_result(entry)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters, if any, get it through shield
            raise
        finally:
            del self._inflight[key]
        return entry

    async def _load(self, key: K) -> V | None:
        stored = None
        use_redis = not self.redis_down()
        if use_redis:
            try:
                raw = await self.redis.get(self.redis_key(key))
                if raw == b"":  # another process found it missing a short while ago
                    self._note_missing(key)
                    return None
                stored = self.from_redis(raw) if raw is not None else None
            except (RedisError, OSError) as exc:
                log.warning("%s cache: Redis unavailable (%r), reading Postgres", self.name, exc)
        found_in_redis = stored is not None
        if stored is None:
            stored = await self.from_postgres(key)
        if stored is None:
            self._note_missing(key)
            if self.negative_redis_ttl_s and use_redis:
                try:
                    # NX: never hide a real entry written meanwhile (a new one overwrites this marker).
                    await self.redis.set(self.redis_key(key), b"", ex=self.negative_redis_ttl_s, nx=True)
                except (RedisError, OSError) as exc:
                    log.warning("%s cache: could not note a missing key in Redis (%r)", self.name, exc)
            return None
        if not found_in_redis and use_redis:
            try:
                await self.redis.set(self.redis_key(key), self.to_redis(stored), ex=self.redis_ttl_s)
            except (RedisError, OSError) as exc:
                log.warning("%s cache: could not refill Redis (%r)", self.name, exc)
        entry = self.ready(stored)
        self._missing.pop(key, None)
        self._entries[key] = entry
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return entry

    def _note_missing(self, key: K) -> None:
        if self.negative_ttl_s:
            if len(self._missing) >= self.size:
                self._missing.clear()  # bounded: a flood of made-up keys costs memory only up to `size`
            self._missing[key] = time.monotonic() + self.negative_ttl_s

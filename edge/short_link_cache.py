"""The SMS short-code cache: code -> (message, version, link, profile), through process, Redis and Postgres.

Built once per edge process (edge.state); the `/s/{code}` route (edge.short_links) reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from redis.asyncio import Redis

from edge.tiered_cache import TieredCache
from tracker.config import Settings
from tracker.contract.keys import short_link_key
from tracker.domain.short_links import ShortLink, resolve


def short_link_cache(settings: Settings, redis: Redis, pg_pool: Any, redis_down: Callable[[], bool]) -> TieredCache:
    async def from_postgres(code: str) -> ShortLink | None:
        async with pg_pool.acquire() as conn:
            return await resolve(conn, code)

    return TieredCache(
        "short-link",
        settings.edge.short_link_cache_size,
        settings.edge.short_link_negative_ttl_s,
        redis,
        settings.edge.link_cache_redis_ttl_s,
        lambda code: short_link_key(settings.stream_prefix, code),
        msgspec.msgpack.Decoder(ShortLink).decode,
        msgspec.msgpack.Encoder().encode,
        from_postgres,
        lambda link: link,
        redis_down,
        # Made-up codes are what a flood sends: remember them in Redis too, for every edge process.
        negative_redis_ttl_s=settings.edge.short_link_negative_ttl_s,
    )

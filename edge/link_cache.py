"""Link-table versions for redirects, through the three-tier cache (process, Redis, Postgres)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from edge.responses import redirect_start
from edge.tiered_cache import TieredCache
from tracker.config import Settings
from tracker.contract.keys import link_table_key
from tracker.contract.urls import BadURL, check_redirect_url
from tracker.domain.link_tables import LinkTable, decode_link_table, encode_link_table, load_version


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


def link_cache(settings: Settings, redis: Redis, pg_pool: Any, redis_down: Callable[[], bool]) -> TieredCache:
    """Link-table versions by (message id, version), ready for redirects."""

    async def from_postgres(key: tuple[int, int]) -> LinkTable | None:
        async with pg_pool.acquire() as conn:
            return await load_version(conn, *key)

    return TieredCache(
        "link-table",
        settings.edge.link_cache_size,
        settings.edge.link_cache_negative_ttl_s,
        redis,
        settings.edge.link_cache_redis_ttl_s,
        lambda key: link_table_key(settings.stream_prefix, *key),
        decode_link_table,
        encode_link_table,
        from_postgres,
        CachedLinks,
        redis_down,
    )

"""`/s/{code}`: SMS short links. Code -> (message, version, link, profile) -> 302 and `clicked`.

Codes resolve through the three-tier cache (process, Redis, Postgres), then the
link through the link-table cache; an unknown code gets a 404 page and no event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from redis.asyncio import Redis

from edge import responses
from edge.capture import Capture
from edge.tiered_cache import TieredCache
from tracker.config import Settings
from tracker.contract.keys import short_link_key
from tracker.contract.tokens import Channel
from tracker.domain.short_links import CODE_PATTERN, ShortLink, resolve

_SMS = int(Channel.SMS)
NOT_FOUND = responses.page(404, "Link not found", "This link is not valid or has expired.")


def short_link_cache(settings: Settings, redis: Redis, pg_pool: Any, redis_down: Callable[[], bool]) -> TieredCache:
    async def from_postgres(code: str) -> ShortLink | None:
        async with pg_pool.acquire() as conn:
            return await resolve(conn, code)

    return TieredCache(
        "short-link",
        settings.edge.short_link_cache_size,
        settings.edge.link_cache_negative_ttl_s,
        redis,
        settings.edge.link_cache_redis_ttl_s,
        lambda code: short_link_key(settings.stream_prefix, code),
        msgspec.msgpack.Decoder(ShortLink).decode,
        msgspec.msgpack.Encoder().encode,
        from_postgres,
        lambda link: link,
        redis_down,
    )


class ShortLinks:
    def __init__(self, state: Any, capture: Capture) -> None:
        self.codes: TieredCache = state.short_links
        self.links: TieredCache = state.links
        self.capture = capture
        self.counters = state.counters

    async def __call__(self, scope: dict, send: Any, code: str) -> None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            start, body = responses.METHOD_NOT_ALLOWED
            await send(start)
            return await send(body)
        redirect = None
        try:
            short = self.codes.cached(code)
            if short is None and CODE_PATTERN.fullmatch(code):
                short = await self.codes.fetch(code)
            if short is not None:
                links = self.links.cached((short.message_id, short.version))
                if links is None:
                    links = await self.links.fetch((short.message_id, short.version))
                if links is not None and short.link_index < len(links.redirects):
                    redirect = links.redirects[short.link_index]
        except Exception:
            # Redis and Postgres both failed us: say so rather than redirect anywhere.
            self.counters.lookup_errors += 1
            start, body = responses.LINK_UNAVAILABLE
            await send(start)
            return await send(body)
        if redirect is None:
            self.counters.unknown_links += 1
            start, body = NOT_FOUND
            await send(start)
            return await send(body)
        await send(redirect)
        await send(responses.EMPTY_BODY)
        if method == "GET":
            self.capture(
                "clicked", _SMS, short.message_id, short.profile_id, scope, short.version, short.link_index
            )

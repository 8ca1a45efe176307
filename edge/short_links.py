"""`/s/{code}`: SMS short links. Code -> (message, version, link, profile) -> 302 and `clicked`.

Codes resolve through the three-tier cache (process, Redis, Postgres; edge.short_link_cache),
then the link through the link-table cache; an unknown code gets a 404 page and no event.
"""

from __future__ import annotations

from typing import Any

from edge import responses
from edge.capture import Capture
from edge.tiered_cache import TieredCache
from tracker.contract.tokens import Channel
from tracker.domain.short_links import CODE_PATTERN

_SMS = int(Channel.SMS)
NOT_FOUND = responses.page(404, "Link not found", "This link is not valid or has expired.")


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

"""`/s/{code}`: SMS short links. Code -> (message, version, link, profile) -> 302 and `clicked`.

Codes resolve through the three-tier cache (process, Redis, Postgres; edge.short_link_cache),
then the link through the link-table cache; an unknown code gets the bad-link page (404) and no event.
Unknown codes are remembered (edge.short_link_cache), and the lookups one process runs at
once are bounded (TRACKER_SHORT_LINK_MAX_INFLIGHT): past the bound a miss answers 503 at
once instead of queueing for Redis and Postgres connections without end. Only the
canonical spelling of a code is served: a %-escaped one is refused like an unknown one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge import responses
from edge.capture import Capture
from edge.tiered_cache import TieredCache
from tracker.contract.tokens import Channel
from tracker.domain.short_links import CODE_PATTERN

_SMS = int(Channel.SMS)
NOT_FOUND = responses.page(404, "Link not found", "This link is not valid or has expired.")
BUSY = responses.page(503, "Try again shortly", "This link cannot be followed right now; please try again.")
BUSY[0]["headers"].append((b"retry-after", b"1"))


class ShortLinks:
    def __init__(
        self, state: Any, capture: Capture, not_found: Callable[[dict], tuple[dict, dict]] | None = None
    ) -> None:
        # The recipient pages' bad-link page when given (language, brand), else a plain one.
        self.not_found = not_found or (lambda scope: NOT_FOUND)
        self.codes: TieredCache = state.short_links
        self.links: TieredCache = state.links
        self.capture = capture
        self.counters = state.counters
        self.max_lookups = state.settings.edge.short_link_max_inflight
        self.lookups = 0  # lookups (cache misses) in flight in this process

    async def __call__(self, scope: dict, send: Any, code: str) -> None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            start, body = responses.METHOD_NOT_ALLOWED
            await send(start)
            return await send(body)
        redirect = None
        # %-escapes would give a code a second spelling: only the canonical one is served.
        if CODE_PATTERN.fullmatch(code) and b"%" not in scope.get("raw_path", b""):
            short = self.codes.cached(code)
            links = None if short is None else self.links.cached((short.message_id, short.version))
            if links is None and not self.codes.missing(code):
                short, links = await self._lookup(send, code, short)
                if short is _ANSWERED:
                    return
            if short is not None and links is not None and short.link_index < len(links.redirects):
                redirect = links.redirects[short.link_index]
        if redirect is None:
            self.counters.unknown_links += 1
            start, body = self.not_found(scope)
            await send(start)
            return await send(body if method == "GET" else responses.EMPTY_BODY)
        await send(redirect)
        await send(responses.EMPTY_BODY)
        # A HEAD is recorded too, as on /c/: its signal makes it a machine's (carriers' link previewers).
        self.capture("clicked", _SMS, short.message_id, short.profile_id, scope, short.version, short.link_index)

    async def _lookup(self, send: Any, code: str, short: Any) -> tuple[Any, Any]:
        """(short link, its link table) through Redis and Postgres, or (_ANSWERED, None) once a 503 is sent."""
        if self.lookups >= self.max_lookups:
            self.counters.lookups_refused += 1
            start, body = BUSY
            await send(start)
            await send(body)
            return _ANSWERED, None
        self.lookups += 1
        try:
            if short is None:
                short = await self.codes.fetch(code)
            links = None if short is None else await self.links.fetch((short.message_id, short.version))
            return short, links
        except Exception:
            # Redis and Postgres both failed us: say so rather than redirect anywhere.
            self.counters.lookup_errors += 1
            start, body = responses.LINK_UNAVAILABLE
            await send(start)
            await send(body)
            return _ANSWERED, None
        finally:
            self.lookups -= 1


_ANSWERED = object()  # a lookup already sent the response

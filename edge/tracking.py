"""The hot path: `/o/{token}` (open pixel) and `/c/{token}` (click redirect), as pure ASGI.

These run before Starlette's router: a prefix test, a token check with no
lookup, an in-process link-table hit, two `send` calls and an append to the
event buffer. Everything else falls through to the Starlette app.
"""

from __future__ import annotations

import time
from typing import Any

from edge import responses
from edge.state import EdgeState
from tracker.tokens import CHANNEL_NAMES, Keyring, TokenKind, verify

_CHANNELS = {int(c): name for c, name in CHANNEL_NAMES.items()}
_OPEN = int(TokenKind.OPEN)
_CLICK = int(TokenKind.CLICK)


class TrackingRoutes:
    def __init__(self, state: EdgeState, app: Any) -> None:
        self.state = state
        self.app = app
        self.keys = Keyring(state.settings.signing_keys)
        self.max_path = state.settings.max_path_len
        # Bound methods looked up once: attribute chains cost on every request.
        self._record = state.events.add
        self._new_id = state.ids.new
        self._facts = state.facts.of
        self._cached_links = state.links.cached
        fallback = state.settings.fallback_url
        self.fallback = responses.redirect_start(fallback.encode()) if fallback else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path: str = scope["path"]
        if len(path) > self.max_path:
            start, body = responses.URI_TOO_LONG
            await send(start)
            return await send(body)
        if path.startswith("/o/"):
            return await self.open_pixel(scope, send, path[3:])
        if path.startswith("/c/"):
            return await self.click(scope, send, path[3:])
        return await self.app(scope, receive, send)

    async def open_pixel(self, scope: dict, send: Any, token_text: str) -> None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            return await self._method_not_allowed(send)
        if token_text.endswith(".gif"):
            token_text = token_text[:-4]
        # The GIF goes out whatever the token says: a broken image helps nobody.
        await send(responses.GIF_START)
        await send(responses.GIF_BODY if method == "GET" else responses.EMPTY_BODY)
        if method == "HEAD":
            return
        token = verify(self.keys, token_text)
        if token is None or token[0] != _OPEN:
            self.state.counters.bad_tokens += 1
            return
        ua_class, ip = self._facts(scope)
        now_us = time.time_ns() // 1000
        # An Event's fields, in order (see tracker.events.Event).
        self._record(
            (self._new_id(now_us // 1000), "opened", _CHANNELS.get(token[1], "email"), token[2], token[3],
             now_us, 0, -1, ua_class, ip, None)
        )  # fmt: skip

    async def click(self, scope: dict, send: Any, token_text: str) -> None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            return await self._method_not_allowed(send)
        token = verify(self.keys, token_text)
        if token is None or token[0] != _CLICK:
            self.state.counters.bad_tokens += 1
            return await self._link_not_found(send)
        _, channel, message_id, profile_id, _, version, index = token
        links = self._cached_links(message_id, version)
        if links is None:
            try:
                links = await self.state.links.fetch(message_id, version)
            except Exception:
                # Redis and Postgres both failed us: say so rather than redirect anywhere.
                self.state.counters.lookup_errors += 1
                start, body = responses.LINK_UNAVAILABLE
                await send(start)
                return await send(body)
        redirect = links.redirects[index] if links is not None and index < len(links.redirects) else None
        if redirect is None:
            self.state.counters.unknown_links += 1
            return await self._link_not_found(send)
        await send(redirect)
        await send(responses.EMPTY_BODY)
        if method == "HEAD":
            return
        ua_class, ip = self._facts(scope)
        now_us = time.time_ns() // 1000
        self._record(
            (self._new_id(now_us // 1000), "clicked", _CHANNELS.get(channel, "email"), message_id, profile_id,
             now_us, version, index, ua_class, ip, None)
        )  # fmt: skip

    async def _link_not_found(self, send: Any) -> None:
        if self.fallback is not None:
            await send(self.fallback)
            return await send(responses.EMPTY_BODY)
        start, body = responses.LINK_NOT_FOUND
        await send(start)
        await send(body)

    async def _method_not_allowed(self, send: Any) -> None:
        start, body = responses.METHOD_NOT_ALLOWED
        await send(start)
        await send(body)

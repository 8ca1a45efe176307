"""The tracking routes, as pure ASGI in front of Starlette: `/o/` (open pixel) and `/c/`
(click redirect) here, `/p/`, `/r/`, `/u/` and `/cf/` in their own modules.

The pixel and the click are the hot path: a prefix test, a token check with
no lookup, an in-process link-table hit, two `send` calls and an append to the
event buffer. Everything else falls through to the Starlette app.
"""

from __future__ import annotations

from typing import Any

from edge import responses
from edge.capture import Capture
from edge.confirm import confirm_route
from edge.pages import RecipientPages
from edge.push import PushCallbacks
from edge.read import ReadBeacon
from edge.short_links import ShortLinks
from edge.site_pixel import SitePixel
from edge.state import EdgeState
from edge.unsubscribe import unsubscribe_route
from tracker.contract.tokens import Channel, Keyring, TokenKind, mint, verify

_OPEN = int(TokenKind.OPEN)
_CLICK = int(TokenKind.CLICK)


class TrackingRoutes:
    def __init__(self, state: EdgeState, app: Any) -> None:
        self.state = state
        self.app = app
        self.keys = Keyring(state.settings.signing_keys)
        self.max_path = state.settings.edge.max_path_len
        self.capture = capture = Capture(state)
        settings, counters = state.settings, state.counters
        self.read = ReadBeacon(self.keys, capture, settings, counters)
        edge = settings.edge
        pages = RecipientPages.build(settings.pages, state, counters)
        self.unsubscribe = unsubscribe_route(self.keys, capture, edge.form_max_bytes, counters, pages=pages)
        self.confirm = confirm_route(self.keys, capture, edge.confirm_url, edge.form_max_bytes, counters, pages=pages)
        self.push = PushCallbacks(self.keys, capture, edge.push_cors_origin, counters)
        # A bad link's page, in the recipient's language and the brand, made once per language.
        self.bad_link = pages.renderer.per_language("invalid", 404)
        self.short_links = ShortLinks(state, capture, self.bad_link)
        self.site = SitePixel(self.keys, capture, settings, counters)
        self.site_param = settings.edge.site_link_param
        self.key_id = settings.active_key_id
        # Looked up once: attribute chains cost on every request.
        self._cached_links = state.links.cached
        self.requests = state.requests
        fallback = state.settings.edge.fallback_url
        self.fallback = responses.redirect_start(fallback.encode()) if fallback else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path: str = scope["path"]
        if len(path) > self.max_path:
            start, body = responses.URI_TOO_LONG
            await send(start)
            await send(body)
            self.requests["too_long", 414] += 1
            return
        # A token has one spelling: one that came %-escaped is not a token (the server unescapes `path`).
        if b"%" in scope.get("raw_path", b""):
            path = _unescaped_token(path)
        if path.startswith("/o/"):
            return await self.open_pixel(scope, send, path[3:])
        if path.startswith("/c/"):
            return await self.click(scope, send, path[3:])
        # Off the two hot routes, a send wrapper that notes the status costs nothing that matters.
        counted = _StatusSend(send)
        try:
            if path.startswith("/s/"):
                route = "sms_link"
                await self.short_links(scope, counted, path[3:])
            elif path.startswith("/p/"):
                route = "push"
                await self.push(scope, counted, path[3:])
            elif path.startswith("/r/"):
                route = "read"
                await self.read(scope, receive, counted, path[3:])
            elif path.startswith("/u/"):
                route = "unsubscribe"
                await self.unsubscribe(scope, receive, counted, path[3:])
            elif path.startswith("/cf/"):
                route = "confirm"
                await self.confirm(scope, receive, counted, path[4:])
            elif path.startswith("/ak"):
                route = "site"
                await self.site(scope, receive, counted, path)
            else:
                route = _other_route(path)
                await self.app(scope, receive, counted)
        finally:
            self.requests[route, counted.status] += 1

    async def open_pixel(self, scope: dict, send: Any, token_text: str) -> None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            return await self._method_not_allowed(send, "open")
        if token_text.endswith(".gif"):
            token_text = token_text[:-4]
        # The GIF goes out whatever the token says: a broken image helps nobody.
        await send(responses.GIF_START)
        await send(responses.GIF_BODY if method == "GET" else responses.EMPTY_BODY)
        self.requests["open", 200] += 1
        # A HEAD is recorded too (its signals make it a machine's): fetches that never render
        # still tell the verdict rules who is probing this message, and from where.
        token = verify(self.keys, token_text)
        if token is None or token[0] != _OPEN:
            self.state.counters.bad_tokens += 1
            return
        self.capture("opened", token[1], token[2], token[3], scope)

    async def click(self, scope: dict, send: Any, token_text: str) -> None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            return await self._method_not_allowed(send, "click")
        token = verify(self.keys, token_text)
        if token is None or token[0] != _CLICK:
            self.state.counters.bad_tokens += 1
            return await self._link_not_found(scope, send)
        _, channel, message_id, profile_id, _, version, index = token
        links = self._cached_links((message_id, version))
        if links is None:
            try:
                links = await self.state.links.fetch((message_id, version))
            except Exception:
                # Redis and Postgres both failed us: say so rather than redirect anywhere.
                self.state.counters.lookup_errors += 1
                start, body = responses.LINK_UNAVAILABLE
                await send(start)
                await send(body)
                self.requests["click", 503] += 1
                return
        redirect = links.redirects[index] if links is not None and index < len(links.redirects) else None
        if redirect is None:
            self.state.counters.unknown_links += 1
            return await self._link_not_found(scope, send)
        if self.site_param:
            # The landing page's pixel picks this up to tie later site actions to the profile.
            ref = mint(self.keys, self.key_id, TokenKind.REF, Channel.SITE, message_id, profile_id)
            url = links.table.links[index].url
            redirect = responses.redirect_start(with_query_param(url, self.site_param, ref).encode("ascii"))
        await send(redirect)
        await send(responses.EMPTY_BODY)
        self.requests["click", 302] += 1
        self.capture("clicked", channel, message_id, profile_id, scope, version, index)

    async def _link_not_found(self, scope: dict, send: Any) -> None:
        # Only ever the configured fallback or our own page: nothing of the request is a place to go.
        if self.fallback:
            start, body = self.fallback, responses.EMPTY_BODY
        else:
            start, body = self.bad_link(scope)
            if scope["method"] == "HEAD":
                body = responses.EMPTY_BODY
        await send(start)
        await send(body)
        self.requests["click", start["status"]] += 1

    async def _method_not_allowed(self, send: Any, route: str) -> None:
        start, body = responses.METHOD_NOT_ALLOWED
        await send(start)
        await send(body)
        self.requests[route, 405] += 1


class _StatusSend:
    """Passes messages on and remembers the response status (0: none was sent)."""

    __slots__ = ("send", "status")

    def __init__(self, send: Any) -> None:
        self.send = send
        self.status = 0

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


_OTHER_ROUTES = (("/api/", "api"), ("/reports/", "provider_reports"), ("/hooks/", "provider_reports"),
                 ("/health", "health"), ("/ready", "ready"), ("/metrics", "metrics"), ("/ak", "site"))  # fmt: skip


_TOKEN_ROUTES = ("/o/", "/c/", "/p/", "/r/", "/u/", "/cf/")


def _unescaped_token(path: str) -> str:
    """The path with its token made invalid (the route then answers as for any bad token)."""
    for prefix in _TOKEN_ROUTES:
        if path.startswith(prefix):
            return prefix + "!"
    return path


def _other_route(path: str) -> str:
    # A fixed set of label values: request paths never become metric labels.
    for prefix, route in _OTHER_ROUTES:
        if path.startswith(prefix):
            return route
    return "other"


def with_query_param(url: str, name: str, value: str) -> str:
    """`url` with `name=value` added to its query, before any fragment (both are URL-safe)."""
    base, hash_mark, fragment = url.partition("#")
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}{name}={value}{hash_mark}{fragment}"

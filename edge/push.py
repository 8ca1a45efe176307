"""`/p/{token}/ack|open|click`: callbacks from apps and web-push service workers.

Answered 204 (a GIF when the URL ends in `.gif` or the client asks for an
image), with CORS headers so a service worker on the sender's origin can call
them; OPTIONS answers the preflight. `click_action` names the tapped action.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from edge import responses
from edge.capture import Capture
from tracker.contract.tokens import Keyring, TokenKind, verify

_PUSH = int(TokenKind.PUSH)
_KINDS = {"ack": "push_delivered", "open": "push_opened", "click": "push_clicked"}
_MAX_ACTION = 64


def clean_action(raw: str) -> str:
    """A click action as stored: printable, short, no markup surprises."""
    kept = "".join(c for c in raw if c.isprintable())
    return kept[:_MAX_ACTION]


class PushCallbacks:
    def __init__(self, keys: Keyring, capture: Capture, cors_origin: str, counters: Any) -> None:
        self.keys = keys
        self.capture = capture
        self.counters = counters
        cors = [
            (b"access-control-allow-origin", cors_origin.encode("latin-1")),
            (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
            (b"access-control-max-age", b"86400"),
        ]
        self.no_content = {"type": "http.response.start", "status": 204, "headers": [*responses.NO_CACHE, *cors]}
        self.preflight = {
            "type": "http.response.start",
            "status": 204,
            "headers": [*cors, (b"access-control-allow-headers", b"content-type")],
        }
        self.gif = {**responses.GIF_START, "headers": [*responses.GIF_START["headers"], *cors]}
        self.not_found = {"type": "http.response.start", "status": 404, "headers": [*cors, (b"content-length", b"0")]}

    async def __call__(self, scope: dict, send: Any, rest: str) -> None:
        """`rest` is the path after `/p/`: `{token}/{ack|open|click}[.gif]`."""
        method = scope["method"]
        if method == "OPTIONS":
            await send(self.preflight)
            return await send(responses.EMPTY_BODY)
        if method not in ("GET", "HEAD", "POST"):
            start, body = responses.METHOD_NOT_ALLOWED
            await send(start)
            return await send(body)
        token_text, _, action = rest.partition("/")
        image = action.endswith(".gif") or _wants_image(scope)
        action = action.removesuffix(".gif")
        kind = _KINDS.get(action)
        token = verify(self.keys, token_text) if kind else None
        if token is None or token[0] != _PUSH:
            self.counters.bad_tokens += 1
            # An image is still an image: a broken icon helps nobody.
            if image:
                await send(self.gif)
                return await send(responses.GIF_BODY if method != "HEAD" else responses.EMPTY_BODY)
            await send(self.not_found)
            return await send(responses.EMPTY_BODY)
        if image:
            await send(self.gif)
            await send(responses.GIF_BODY if method != "HEAD" else responses.EMPTY_BODY)
        else:
            await send(self.no_content)
            await send(responses.EMPTY_BODY)
        if method == "HEAD":
            return
        data = None
        if kind == "push_clicked":
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")[:1024]))
            data = {"action": clean_action(query.get("click_action", ""))}
        self.capture(kind, token[1], token[2], token[3], scope, data=data)


def _wants_image(scope: dict) -> bool:
    for name, value in scope["headers"]:
        if name == b"accept":
            return value.startswith(b"image/")
    return False

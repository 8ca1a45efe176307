"""Reading small POST bodies with a hard size limit, before any work is done with them."""

from __future__ import annotations

from typing import Any

from edge import responses
from edge.capture import Capture
from tracker.contract.numbers import content_length
from tracker.contract.tokens import Keyring, verify


class BodyTooLarge(Exception):
    pass


async def read_body(scope: dict, receive: Any, limit: int) -> bytes:
    """The whole request body, or BodyTooLarge as soon as it passes `limit` bytes."""
    for name, value in scope["headers"]:
        if name == b"content-length" and (content_length(value.decode("latin-1"), limit) or 0) > limit:
            raise BodyTooLarge
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class ActionForm:
    """A token route whose GET shows a one-button page and whose POST records one event.

    Used by unsubscribe and double opt-in confirmation: link scanners fetch
    every URL in a message, so only the POST (a person pressing the button, or
    a mail client's RFC 8058 one-click) records anything.
    """

    def __init__(
        self,
        keys: Keyring,
        capture: Capture,
        token_kind: int,
        event_kind: str,
        ask: tuple[dict, dict],
        done: tuple[dict, dict],
        invalid: tuple[dict, dict],
        form_max_bytes: int,
        counters: Any,
    ) -> None:
        self.keys = keys
        self.capture = capture
        self.token_kind = token_kind
        self.event_kind = event_kind
        self.ask, self.done, self.invalid = ask, done, invalid
        self.form_max_bytes = form_max_bytes
        self.counters = counters

    async def __call__(self, scope: dict, receive: Any, send: Any, token_text: str) -> None:
        method = scope["method"]
        token = verify(self.keys, token_text)
        valid = token is not None and token[0] == self.token_kind
        if method in ("GET", "HEAD"):
            start, body = self.ask if valid else self.invalid
        elif method == "POST":
            try:
                await read_body(scope, receive, self.form_max_bytes)
            except BodyTooLarge:
                start, body = responses.PAYLOAD_TOO_LARGE
            else:
                if token is not None and valid:
                    self.capture(self.event_kind, token[1], token[2], token[3], scope)
                start, body = self.done if valid else self.invalid
        else:
            start, body = responses.METHOD_NOT_ALLOWED
        if not valid and method in ("GET", "POST"):
            self.counters.bad_tokens += 1
        await send(start)
        await send(body if method != "HEAD" else responses.EMPTY_BODY)

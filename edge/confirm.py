"""`/cf/{token}`: double opt-in confirmation that a link scanner cannot trigger.

The GET answers a page with a single "Confirm" button and records nothing:
security gateways and link previewers fetch every URL in a message, and a
confirmation they could trigger would prove nothing about the person. Only
the POST from that button records `confirmed`, then leads (303) to the
configured thank-you page (or a built-in one).
"""

from __future__ import annotations

from typing import Any

from edge import responses
from edge.capture import Capture
from edge.forms import BodyTooLarge, read_body
from edge.pages import METHOD_NOT_ALLOWED, RecipientPages
from tracker.config.pages import PagesSettings
from tracker.contract.tokens import Keyring, TokenKind, verify_fresh

_CONFIRM = int(TokenKind.CONFIRM)


class ConfirmPages:
    def __init__(
        self, keys: Keyring, capture: Capture, thanks_url: str, form_max_bytes: int, counters: Any,
        pages: RecipientPages,
    ) -> None:  # fmt: skip
        self.keys = keys
        self.capture = capture
        self.form_max_bytes = form_max_bytes
        self.counters = counters
        self.pages = pages.leading_to(thanks_url) if thanks_url else pages
        self.thanks = None
        if thanks_url:  # checked as a safe absolute URL by the settings
            start = {
                "type": "http.response.start",
                "status": 303,
                "headers": [(b"location", thanks_url.encode()), (b"content-length", b"0"), *responses.NO_CACHE],
            }
            self.thanks = (start, responses.EMPTY_BODY)

    async def __call__(self, scope: dict, receive: Any, send: Any, token_text: str) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD", "POST"):
            return await self.pages.send(scope, send, METHOD_NOT_ALLOWED)
        token, expired = verify_fresh(self.keys, token_text, self.pages.confirm_max_age_s)
        if token is None or token[0] != _CONFIRM:
            if method != "HEAD":
                self.counters.bad_tokens += 1
            return await self.pages.send(scope, send, self.pages.refused(scope, expired))
        page = "confirm"
        if method == "POST":
            try:
                await read_body(scope, receive, self.form_max_bytes)
            except BodyTooLarge:
                return await self.pages.send(scope, send, responses.PAYLOAD_TOO_LARGE)
            self.capture("confirmed", token[1], token[2], token[3], scope)
            if self.thanks is not None:
                return await self.pages.send(scope, send, self.thanks)
            page = "confirmed"
        details = await self.pages.details(token)
        await self.pages.send(scope, send, self.pages.render(page, 200, scope, **details))


def confirm_route(
    keys: Keyring, capture: Capture, thanks_url: str, form_max_bytes: int, counters: Any, *,
    pages: RecipientPages | None = None,
) -> ConfirmPages:  # fmt: skip
    """The `/cf/` route; without `pages` (built with the edge's state) it shows no list or address."""
    if pages is None:
        pages = RecipientPages.build(PagesSettings())
    return ConfirmPages(keys, capture, thanks_url, form_max_bytes, counters, pages)

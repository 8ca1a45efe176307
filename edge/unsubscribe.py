"""`/u/{token}`: unsubscribe, undo, and `/u/{token}/preferences`. A GET never changes anything.

Link scanners and mail security gateways follow every GET in an email, so
only a POST acts: the page's button, or a mail client's RFC 8058
`List-Unsubscribe=One-Click` (form or multipart), sent without cookies and
without following redirects. That POST answers 200 with a page whatever the
body says and is idempotent (the flusher sets the status; repeating it
changes nothing). The "done" page offers the undo: a POST with
`action=resubscribe` to the same URL records `subscribed` the same way.

The preferences page lists every subscription of the token's profile with
a toggle each; a toggle names the list, which an event cannot (events carry
a message, and the flusher applies one to the message's list), so it is
written to Postgres at once, only ever for a subscription the profile has.
"""

from __future__ import annotations

from typing import Any

from edge import responses
from edge.capture import Capture
from edge.forms import BodyTooLarge, read_body
from edge.pages import METHOD_NOT_ALLOWED, RecipientPages, form_fields
from tracker.config.pages import PagesSettings
from tracker.contract.numbers import MAX_ID, parse_int
from tracker.contract.tokens import Keyring, TokenKind, verify_fresh

_UNSUBSCRIBE = int(TokenKind.UNSUBSCRIBE)
_PREFERENCES = "preferences"


class UnsubscribePages:
    def __init__(
        self, keys: Keyring, capture: Capture, form_max_bytes: int, counters: Any, pages: RecipientPages
    ) -> None:
        self.keys = keys
        self.capture = capture
        self.form_max_bytes = form_max_bytes
        self.counters = counters
        self.pages = pages

    async def __call__(self, scope: dict, receive: Any, send: Any, rest: str) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD", "POST"):
            return await self.pages.send(scope, send, METHOD_NOT_ALLOWED)
        token_text, _, sub_page = rest.partition("/")
        token, expired = verify_fresh(self.keys, token_text, self.pages.unsubscribe_max_age_s)
        if token is None or token[0] != _UNSUBSCRIBE or sub_page not in ("", _PREFERENCES):
            if method != "HEAD":
                self.counters.bad_tokens += 1
            return await self.pages.send(scope, send, self.pages.refused(scope, expired))
        fields: dict[str, str] = {}
        if method == "POST":
            try:
                fields = form_fields(scope, await read_body(scope, receive, self.form_max_bytes))
            except BodyTooLarge:
                return await self.pages.send(scope, send, responses.PAYLOAD_TOO_LARGE)
        if sub_page == _PREFERENCES:
            response = await self.preferences(scope, token, fields if method == "POST" else None)
        else:
            response = await self.unsubscribe(scope, token, token_text, fields if method == "POST" else None)
        await self.pages.send(scope, send, response)

    async def unsubscribe(self, scope: dict, token: tuple, token_text: str, form: dict | None) -> tuple[dict, dict]:
        page = "unsubscribe"
        if form is not None:
            # Only our own undo button says anything else; every other POST is an unsubscribe.
            resubscribe = form.get("action") == "resubscribe"
            self.capture("subscribed" if resubscribe else "unsubscribed", token[1], token[2], token[3], scope)
            page = "resubscribed" if resubscribe else "unsubscribed"
        details = await self.pages.details(token)
        # Relative, so the link works whatever prefix a proxy serves the edge under; none without Postgres.
        preferences_url = f"{token_text}/{_PREFERENCES}" if self.pages.lookup is not None else ""
        return self.pages.render(page, 200, scope, preferences_url=preferences_url, **details)

    async def preferences(self, scope: dict, token: tuple, form: dict | None) -> tuple[dict, dict]:
        lookup, profile_id = self.pages.lookup, token[3]
        status, saved = 200, False
        if form is not None:
            resource, subscribe = parse_int(form.get("resource", ""), 1, MAX_ID), form.get("subscribe", "")
            if resource is None or subscribe not in ("0", "1"):
                status = 400
            elif lookup is None or not await lookup.set_subscribed(profile_id, resource, subscribe == "1"):
                return self.pages.render("unavailable", 503, scope)
            else:
                saved = True
        subscriptions = await lookup.subscriptions(profile_id) if lookup is not None else None
        details = await self.pages.details(token)
        return self.pages.render(
            "preferences", status, scope, subscriptions=subscriptions, saved=saved, address=details["address"]
        )


def unsubscribe_route(
    keys: Keyring, capture: Capture, form_max_bytes: int, counters: Any, *, pages: RecipientPages | None = None
) -> UnsubscribePages:
    """The `/u/` route; without `pages` (built with the edge's state) it shows no list, address or preferences."""
    if pages is None:
        pages = RecipientPages.build(PagesSettings())
    return UnsubscribePages(keys, capture, form_max_bytes, counters, pages)

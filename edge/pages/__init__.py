"""The pages a recipient sees: unsubscribe, double opt-in confirm, their "done" pages, preferences, bad links.

`RecipientPages` holds what the `/u/` and `/cf/` routes share: the renderer
(templates, strings, brand), the lookup of the list and address a token points
at, and how a page and a form body travel over ASGI.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from edge import responses
from edge.pages.lookup import RecipientLookup
from edge.pages.mask import masked_address
from edge.pages.render import PageRenderer
from tracker.config.pages import PagesSettings
from tracker.contract.tokens import CHANNEL_NAMES

__all__ = ["PageRenderer", "RecipientLookup", "RecipientPages", "form_fields"]

# The token routes take GET and HEAD (pages) and POST (their buttons, RFC 8058 one-click).
METHOD_NOT_ALLOWED = responses.page(405, "Method not allowed", "Only GET, HEAD and POST are accepted here.")
METHOD_NOT_ALLOWED[0]["headers"].append((b"allow", b"GET, HEAD, POST"))


class RecipientPages:
    def __init__(
        self, renderer: PageRenderer, lookup: RecipientLookup | None, settings: PagesSettings | None = None
    ) -> None:
        self.renderer = renderer
        self.lookup = lookup  # None: pages without list names, addresses or preferences
        self.settings = settings or PagesSettings()
        # Token age limits (0: none); only tokens minted with an issue time can be too old.
        self.confirm_max_age_s = self.settings.confirm_max_age_days * 86400
        self.unsubscribe_max_age_s = self.settings.unsubscribe_max_age_days * 86400

    @classmethod
    def build(cls, settings: PagesSettings, pool_source: Any = None, counters: Any = None) -> RecipientPages:
        """Pages from settings; `pool_source` (the edge state, with `pg_pool`) enables the lookups."""
        lookup = RecipientLookup(pool_source, counters) if pool_source is not None else None
        return cls(PageRenderer(settings), lookup, settings)

    def leading_to(self, *urls: str) -> RecipientPages:
        """The same pages, whose forms may also end on `urls` (a thank-you page after a 303)."""
        return RecipientPages(self.renderer.leading_to(*urls), self.lookup, self.settings)

    async def details(self, token: tuple) -> dict[str, str]:
        """The list name and masked address of a verified token's message and profile (empty when unknown)."""
        found = await self.lookup.details(token[2], token[3]) if self.lookup is not None else None
        if found is None:
            return {"list_name": "", "address": ""}
        channel = CHANNEL_NAMES.get(token[1], "")
        return {"list_name": found.list_name, "address": masked_address(channel, found.email, found.phone)}

    def refused(self, scope: dict, expired: bool) -> tuple[dict, dict]:
        """The page for a link we cannot act on: too old (410), or not a link of ours at all (404)."""
        return self.renderer.render("expired", 410, scope) if expired else self.renderer.render("invalid", 404, scope)

    def render(self, page: str, status: int, scope: dict, **context: Any) -> tuple[dict, dict]:
        return self.renderer.render(page, status, scope, **context)

    @staticmethod
    async def send(scope: dict, send: Any, response: tuple[dict, dict]) -> None:
        start, body = response
        await send(start)
        await send(body if scope["method"] != "HEAD" else responses.EMPTY_BODY)


def form_fields(scope: dict, body: bytes) -> dict[str, str]:
    """The fields of one of our own forms (urlencoded); anything else, such as a multipart
    RFC 8058 body, has none that matter here."""
    for name, value in scope["headers"]:
        if name == b"content-type" and value.split(b";")[0].strip().lower() == b"application/x-www-form-urlencoded":
            try:
                fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=16)
            except ValueError:  # more fields than any of our forms has
                return {}
            return {key: values[-1] for key, values in fields.items()}
    return {}

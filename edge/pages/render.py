"""Recipient pages from Jinja2 templates: the shipped ones, or an operator's of the same name.

Templates and strings are read once, when the edge starts; a page is rendered
per request because it names the recipient's list and address. Autoescaping is
on for every template, and the brand values were checked by the settings, so
neither a list name nor a setting can add markup to a page.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2

from edge import responses
from edge.pages.language import SHIPPED, load_strings, pick_language
from tracker.config.pages import PagesSettings

SHIPPED_TEMPLATES = Path(__file__).parent / "templates"
# Every page any route renders: each must exist (shipped or overridden) when the edge starts.
PAGES = ("unsubscribe", "unsubscribed", "resubscribed", "preferences", "confirm", "confirmed", "invalid",
         "expired", "unavailable")  # fmt: skip


class PageRenderer:
    """`render(page, status, scope, **context)` -> (start, body) messages of a whole HTML response."""

    def __init__(self, settings: PagesSettings, form_targets: tuple[str, ...] = ()) -> None:
        folders = [str(settings.templates_dir)] if settings.templates_dir else []
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([*folders, str(SHIPPED_TEMPLATES)]),
            autoescape=True,
            auto_reload=False,  # read once: no stat() per request; a changed template needs a restart
            undefined=jinja2.ChainableUndefined,  # an operator's template may test for values a page lacks
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates = {page: self.env.get_template(f"{page}.html") for page in PAGES}
        self.strings = load_strings(SHIPPED, settings.strings_dir)
        self.languages = frozenset(self.strings)
        self.default_language = settings.default_language if settings.default_language in self.strings else "en"
        self.brand = {"name": settings.brand_name, "logo_url": settings.brand_logo_url, "colour": settings.brand_colour}
        self.security_headers = _security_headers(settings.brand_logo_url, form_targets)
        self._logo_url = settings.brand_logo_url

    def leading_to(self, *urls: str) -> PageRenderer:
        """This renderer (templates shared) with forms allowed to end on `urls` too."""
        other = copy.copy(self)
        other.security_headers = _security_headers(self._logo_url, urls)
        return other

    def language(self, scope: dict) -> str:
        for name, value in scope["headers"]:
            if name == b"accept-language":
                return pick_language(value.decode("latin-1"), self.languages, self.default_language)
        return self.default_language

    def render(self, page: str, status: int, scope: dict, **context: Any) -> tuple[dict, dict]:
        return self.render_in(self.language(scope), page, status, **context)

    def per_language(self, page: str, status: int) -> PerLanguage:
        """A page that names nothing of the request, rendered now in every language: answering only picks one."""
        return PerLanguage(self, {language: self.render_in(language, page, status) for language in self.languages})

    def render_in(self, language: str, page: str, status: int, **context: Any) -> tuple[dict, dict]:
        body = (
            self.templates[page]
            .render(lang=language, t=self.strings[language], brand=self.brand, page=page, **context)
            .encode()
        )
        headers = [*responses.NO_CACHE, (b"x-content-type-options", b"nosniff"),
                   (b"content-language", language.encode()), *self.security_headers]  # fmt: skip
        return responses.complete(status, b"text/html; charset=utf-8", body, headers)


class PerLanguage:
    """`page(scope)` -> the (start, body) messages made once for the language the request asks for."""

    __slots__ = ("renderer", "responses")

    def __init__(self, renderer: PageRenderer, responses: dict[str, tuple[dict, dict]]) -> None:
        self.renderer = renderer
        self.responses = responses

    def __call__(self, scope: dict) -> tuple[dict, dict]:
        return self.responses[self.renderer.language(scope)]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _security_headers(logo_url: str, form_targets: tuple[str, ...]) -> list[tuple[bytes, bytes]]:
    # The token is in the URL: keep it out of Referer headers, frames and other origins. Forms may
    # post back here, and also lead on to a configured page (Chromium checks form-action on redirects).
    images = f"img-src {_origin(logo_url)}; " if logo_url else ""
    forms = " ".join(["'self'", *(_origin(url) for url in form_targets if url)])
    policy = (f"default-src 'none'; style-src 'unsafe-inline'; {images}form-action {forms}; "
              "base-uri 'none'; frame-ancestors 'none'")  # fmt: skip
    return [(b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
            (b"content-security-policy", policy.encode())]  # fmt: skip

"""Responses built once, up front: sending one is two `send` calls with ready-made bytes."""

from __future__ import annotations

import base64
import html

# The smallest transparent GIF89a: 1x1, one transparent colour, 43 bytes.
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")
assert len(GIF) == 43

NO_CACHE = [
    (b"cache-control", b"no-store, no-cache, must-revalidate, max-age=0, private"),
    (b"pragma", b"no-cache"),
    (b"expires", b"Thu, 01 Jan 1970 00:00:00 GMT"),
]

GIF_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"image/gif"),
        (b"content-length", b"43"),
        *NO_CACHE,
    ],
}
GIF_BODY = {"type": "http.response.body", "body": GIF}
EMPTY_BODY = {"type": "http.response.body", "body": b""}

_REDIRECT_HEADERS = [(b"content-length", b"0"), *NO_CACHE, (b"referrer-policy", b"no-referrer-when-downgrade")]


def redirect_start(location: bytes) -> dict:
    """A 302 start message; `location` must come from a checked link table, never the request."""
    return {"type": "http.response.start", "status": 302, "headers": [(b"location", location), *_REDIRECT_HEADERS]}


def page(status: int, title: str, text: str, extra: str = "") -> tuple[dict, dict]:
    """A tiny HTML page (start, body) a person may see in a browser; `extra` is trusted markup."""
    body = (
        "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:32em;margin:3em auto;padding:0 1em}"
        "button{font:inherit;padding:.5em 1.2em}</style>"
        f"<title>{html.escape(title)}</title><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{extra}"
    ).encode()
    return complete(status, b"text/html; charset=utf-8", body, [*NO_CACHE, (b"x-content-type-options", b"nosniff")])


def complete(status: int, content_type: bytes, body: bytes, headers: list | None = None) -> tuple[dict, dict]:
    """(start, body) messages of a whole response, built once."""
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(headers or [])],
    }
    return start, {"type": "http.response.body", "body": body}


URI_TOO_LONG = page(414, "Address too long", "The requested address is too long.")
METHOD_NOT_ALLOWED = page(405, "Method not allowed", "Only GET and HEAD are accepted here.")
LINK_UNAVAILABLE = page(503, "Try again shortly", "This link cannot be followed right now; please try again.")
METHOD_NOT_ALLOWED[0]["headers"].append((b"allow", b"GET, HEAD"))


_PAGE_SECURITY = [
    # The token is in the URL: keep it out of Referer headers, frames and other origins.
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"),
]


def form_page(status: int, title: str, text: str, button: str, fields: dict[str, str]) -> tuple[dict, dict]:
    """A page whose only action is a POST back to the same URL (link scanners only GET)."""
    hidden = "".join(
        f"<input type=hidden name='{html.escape(name)}' value='{html.escape(value)}'>" for name, value in fields.items()
    )
    form = f"<form method=post>{hidden}<button type=submit>{html.escape(button)}</button></form>"
    start, body = page(status, title, text, extra=form)
    start["headers"].extend(_PAGE_SECURITY)
    return start, body


def secure_page(status: int, title: str, text: str) -> tuple[dict, dict]:
    start, body = page(status, title, text)
    start["headers"].extend(_PAGE_SECURITY)
    return start, body


PAYLOAD_TOO_LARGE = page(413, "Request too large", "The request body is too large.")

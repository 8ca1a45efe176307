"""Which URLs may be redirected to: checked when a link table is written, again when loaded."""

from __future__ import annotations

from urllib.parse import urlsplit

MAX_URL_LEN = 4096


class BadURL(ValueError):
    """A URL that must never become a Location header."""


def check_redirect_url(url: str) -> str:
    """Return `url` if it is an absolute http(s) URL safe to put in a Location header."""
    if not isinstance(url, str) or not url:
        raise BadURL("empty URL")
    if len(url) > MAX_URL_LEN:
        raise BadURL(f"URL longer than {MAX_URL_LEN} characters")
    # CR/LF would split the header; other controls and spaces are never valid in a URL.
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise BadURL("URL contains a space or control character")
    if not url.isascii():
        raise BadURL("URL has non-ASCII characters (percent-encode or punycode them)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BadURL("URL must start with http:// or https://")
    if not parts.hostname:
        raise BadURL("URL has no host")
    if "\\" in parts.netloc:
        raise BadURL("URL host contains a backslash")
    return url

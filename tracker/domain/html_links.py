"""Trackable links of an email's HTML, found by a real HTML parser, with their source positions.

The stdlib parser decides what is a tag (links in comments, scripts and
styles are not links) and reports where each `<a>`/`<area>` start tag begins;
the tag's own text is then split into attributes with the parser's own
grammar, so an href can be replaced and link attributes removed in the
original text while everything else stays byte for byte as written.

Tracked: absolute http(s) hrefs. Left alone: mailto:, tel:, anchors, relative
URLs and template placeholders (`{{...}}`, `{%...%}`). Never tracked and never
allowed to carry link attributes: javascript:, data: and the like.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from urllib.parse import quote, urlsplit, urlunsplit

from tracker.contract.urls import BadURL, check_redirect_url
from tracker.domain.errors import InputError

# The grammar of html.parser (Python 3.11) for a start tag's name and attributes.
_TAG_NAME = re.compile(r"([a-zA-Z][^\t\n\r\f />\x00]*)(?:\s|/(?!>))*")
_ATTRIBUTE = re.compile(
    r"((?<=['\"\s/])[^\s/>][^\s/=>]*)(\s*=+\s*('[^']*'|\"[^\"]*\"|(?!['\"])[^>\s]*))?(?:\s|/(?!>))*"
)
_PLACEHOLDER = re.compile(r"\{\{|\{%")
LINK_TAGS = frozenset({"a", "area"})


HONEYPOT = "tracker-honeypot"  # marks the invisible link only machines follow (tracker.domain.verdicts)


def is_link_attribute(name: str) -> bool:
    """Attributes the flusher reads when the link is clicked: profile effects, or the honeypot mark."""
    return name.startswith("update-") or name == "subscribe-to" or name == HONEYPOT


@dataclass(frozen=True)
class FoundLink:
    url: str  # the URL to redirect to (entities decoded, normalised)
    attributes: dict[str, str]  # link attributes only, names lower-case, values verbatim
    line: int  # 1-based, for error messages


@dataclass
class LinkedHTML:
    """HTML split at each tracked href: parts[2i] is text, parts[2i+1] the index of link i."""

    parts: list[str | int] = field(default_factory=list)
    links: list[FoundLink] = field(default_factory=list)
    body_end: int | None = None  # offset in the last text part where `</body>` starts


class _StartTags(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.line_starts = [0, *(m.end() for m in re.finditer("\n", text))]
        self.tags: list[tuple[int, int, str, list[tuple[str, str | None]]]] = []
        self.body_end: int | None = None
        self.html_end: int | None = None

    def _offset(self) -> int:
        line, column = self.getpos()
        return self.line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in LINK_TAGS:
            self.tags.append((self._offset(), self.getpos()[0], self.get_starttag_text() or "", attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self.body_end = self._offset()
        elif tag == "html":
            self.html_end = self._offset()


def find_links(html: str) -> LinkedHTML:
    """Parse once; raises InputError for links that cannot be tracked as written."""
    parser = _StartTags(html)
    parser.feed(html)
    parser.close()
    out = LinkedHTML()
    position = 0
    text_parts: list[str] = []
    for offset, line, raw, parsed_attrs in parser.tags:
        if html[offset : offset + len(raw)] != raw:
            raise InputError("unparsable_html", f"line {line}: could not locate the link tag in the source")
        edited = _edit_tag(raw, parsed_attrs, line, len(out.links))
        if edited is None:
            continue
        before_href, after_href, link = edited
        text_parts.append(html[position:offset] + before_href)
        out.parts.append("".join(text_parts))
        out.parts.append(len(out.links))
        out.links.append(link)
        text_parts = [after_href]
        position = offset + len(raw)
    tail = "".join(text_parts) + html[position:]
    end = parser.body_end if parser.body_end is not None else parser.html_end
    if end is not None and end >= position:
        out.body_end = len(tail) - (len(html) - end)
    out.parts.append(tail)
    return out


def _edit_tag(
    raw: str, parsed_attrs: list[tuple[str, str | None]], line: int, next_index: int
) -> tuple[str, str, FoundLink] | None:
    """(tag text up to the href value, tag text after it, the link), or None when not tracked."""
    name = _TAG_NAME.match(raw, 1)
    assert name is not None
    spans: list[tuple[str, str | None, tuple[int, int], tuple[int, int] | None]] = []
    pos = name.end()
    while pos < len(raw):
        m = _ATTRIBUTE.match(raw, pos)
        if not m:
            break
        value = m.group(3)
        if value is not None and value[:1] == value[-1:] and value[:1] in ("'", '"') and len(value) >= 2:
            value = value[1:-1]
        # The whole attribute including the space before it, so removing it leaves tidy markup.
        start = m.start(1)
        while start > 0 and raw[start - 1] in " \t\r\n\f":
            start -= 1
        end = m.end(2) if m.group(2) is not None else m.end(1)
        value_span = m.span(3) if value is not None else None
        spans.append((m.group(1).lower(), unescape(value) if value else value, (start, end), value_span))
        pos = m.end()
    if [(n, v) for n, v, _, _ in spans] != parsed_attrs:
        raise InputError("unparsable_html", f"line {line}: could not read the attributes of {raw[:80]!r}")

    href = next(((value, vspan) for n, value, _, vspan in spans if n == "href"), None)
    attributes = {n: value or "" for n, value, _, _ in spans if is_link_attribute(n)}
    url = _trackable(href[0] if href else None, line)
    if url is None:
        if attributes:
            raise InputError(
                "attributes_on_untracked_link",
                f"line {line}: {', '.join(attributes)} on a link that is not tracked "
                f"(href {href[0] if href else None!r}); only http(s) links can carry link attributes",
            )
        return None
    assert href is not None and href[1] is not None
    value_start, value_end = href[1]
    # Cut the link attributes out and split the tag around the href value (quotes replaced by ours).
    removed = [span for n, _, span, _ in spans if is_link_attribute(n)]
    before = _without(raw, 0, value_start, removed) + '"'
    after = '"' + _without(raw, value_end, len(raw), removed)
    return before, after, FoundLink(url, attributes, line)


def _without(raw: str, start: int, end: int, removed: list[tuple[int, int]]) -> str:
    pieces, pos = [], start
    for a, b in removed:
        if a >= start and b <= end:
            pieces.append(raw[pos:a])
            pos = b
    pieces.append(raw[pos:end])
    return "".join(pieces)


def _trackable(href: str | None, line: int) -> str | None:
    if href is None:
        return None
    url = href.strip()
    if _PLACEHOLDER.search(url):
        return None
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("http", "https"):
        return None
    try:
        return check_redirect_url(normalise_url(url))
    except BadURL as exc:
        raise InputError("bad_link", f"line {line}: link {href!r} cannot be tracked: {exc}") from None


def normalise_url(url: str) -> str:
    """Percent-encode what a browser would (spaces, non-ASCII path and query) and punycode the host."""
    if url.isascii() and " " not in url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise BadURL(f"host {host!r} is not a valid domain name") from None
    netloc = parts.netloc.replace(host, ascii_host, 1) if host else parts.netloc
    safe = "/:@!$&'()*+,;=%~-._?#"
    return urlunsplit(
        (parts.scheme, netloc, quote(parts.path, safe=safe), quote(parts.query, safe=safe),
         quote(parts.fragment, safe=safe))
    )  # fmt: skip

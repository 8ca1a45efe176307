"""A message's content compiled once per version: literal text and the slots a recipient fills.

Email HTML: every tracked href is a `click` slot; an open pixel and a read
beacon go before `</body>` (or at the end); `{{unsubscribe_url}}` and
`{{confirm_url}}` become slots wherever they appear. SMS text: every http(s)
URL becomes a `short` slot (a per-recipient `/s/{code}` link). Push content
is kept as it is; a recipient gets its ack/open/click URLs beside it.

The same content always compiles to the same links in the same order, so a
stored version's content can be compiled again at render time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tracker.contract.tokens import MESSAGE_CHANNELS
from tracker.contract.urls import BadURL, check_redirect_url
from tracker.domain.errors import InputError
from tracker.domain.html_links import find_links, normalise_url
from tracker.domain.link_tables import Link

# Slot kinds: what a recipient's value is made from.
CLICK, SHORT, OPEN, READ, UNSUBSCRIBE, CONFIRM = "click", "short", "open", "read", "unsubscribe", "confirm"
PLACEHOLDERS = re.compile(r"\{\{\s*(unsubscribe_url|confirm_url)\s*\}\}")
_PLACEHOLDER_SLOTS = {"unsubscribe_url": UNSUBSCRIBE, "confirm_url": CONFIRM}
_TEXT_URL = re.compile(r"https?://\S+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""
# The pixel and the beacon as literal text around their slots (the renderer adds the URLs).
PIXEL_OPEN = '<img src="'
PIXEL_CLOSE = '" width="1" height="1" alt="" style="display:block;border:0;width:1px;height:1px">'

Slot = tuple[str, int]  # (kind, link index; 0 when the kind has no link)


@dataclass(frozen=True)
class Template:
    channel: str
    parts: tuple[str | Slot, ...]
    links: tuple[Link, ...]
    lines: tuple[int, ...]  # where each link is in the content, for messages

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(part[0] for part in self.parts if isinstance(part, tuple))


def compile_template(channel: str, content: str) -> Template:
    if channel not in MESSAGE_CHANNELS:
        raise InputError("invalid_channel", f"channel {channel!r} is not one of {', '.join(MESSAGE_CHANNELS)}")
    if channel == "email":
        return _compile_email(content)
    if channel == "sms":
        return _compile_sms(content)
    return Template(channel, (content,), (), ())


def _compile_email(html: str) -> Template:
    found = find_links(html)
    parts: list[str | Slot] = []
    for part in found.parts[:-1]:
        parts.append(("click", part) if isinstance(part, int) else part)
    tail = found.parts[-1]
    assert isinstance(tail, str)
    end = len(tail) if found.body_end is None else found.body_end
    parts += [tail[:end] + PIXEL_OPEN, (OPEN, 0), PIXEL_CLOSE + PIXEL_OPEN, (READ, 0), PIXEL_CLOSE, tail[end:]]
    links = tuple(Link(link.url, link.attributes) for link in found.links)
    return Template("email", _with_placeholders(parts), links, tuple(link.line for link in found.links))


def _compile_sms(text: str) -> Template:
    parts: list[str | Slot] = []
    links: list[Link] = []
    lines: list[int] = []
    position = 0
    for match in _TEXT_URL.finditer(text):
        url = match.group().rstrip(_TRAILING)
        if "{{" in url or "{%" in url:
            continue
        line = text.count("\n", 0, match.start()) + 1
        try:
            links.append(Link(check_redirect_url(normalise_url(url))))
        except BadURL as exc:
            raise InputError("bad_link", f"line {line}: link {url!r} cannot be tracked: {exc}") from None
        lines.append(line)
        parts += [text[position : match.start()], (SHORT, len(links) - 1)]
        position = match.start() + len(url)
    parts.append(text[position:])
    return Template("sms", _with_placeholders(parts), tuple(links), tuple(lines))


def _with_placeholders(parts: list[str | Slot]) -> tuple[str | Slot, ...]:
    """Split text parts at `{{unsubscribe_url}}`/`{{confirm_url}}`; merge neighbouring text."""
    out: list[str | Slot] = []
    for part in parts:
        if isinstance(part, tuple):
            out.append(part)
            continue
        position = 0
        for match in PLACEHOLDERS.finditer(part):
            out += [part[position : match.start()], (_PLACEHOLDER_SLOTS[match.group(1)], 0)]
            position = match.end()
        out.append(part[position:])
    merged: list[str | Slot] = []
    for part in out:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    return tuple(merged)

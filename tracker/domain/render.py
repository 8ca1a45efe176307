"""Per-recipient content of a message: tracked links, pixels, unsubscribe URL and headers.

A template is compiled once per version (`tracker.domain.message_templates`) and bound
once per render call: the base URL and route prefixes are merged into the
literal text, so each recipient costs its tokens and one `str.join`. Tokens
come from `MessageTokens`, which makes the bytes of `tracker.contract.tokens.mint`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.asyncio import Redis

from tracker.config import Settings
from tracker.contract.tokens import MESSAGE_CHANNELS, TIMED_KINDS, Channel, Keyring, TokenKind, mint
from tracker.domain.errors import InputError, NotFound
from tracker.domain.link_tables import load_version
from tracker.domain.message_templates import CLICK, CONFIRM, OPEN, READ, SHORT, UNSUBSCRIBE, Template, compile_template
from tracker.domain.short_links import codes_for
from tracker.domain.token_batches import MessageTokens

_ROUTES = {CLICK: ("/c/", ""), SHORT: ("/s/", ""), OPEN: ("/o/", ".gif"), READ: ("/r/", ""),
           UNSUBSCRIBE: ("/u/", ""), CONFIRM: ("/cf/", "")}  # fmt: skip
_KINDS = {OPEN: TokenKind.OPEN, READ: TokenKind.READ, UNSUBSCRIBE: TokenKind.UNSUBSCRIBE, CONFIRM: TokenKind.CONFIRM}
CHANNEL_IDS = {name: Channel[name.upper()] for name in MESSAGE_CHANNELS}
ONE_CLICK = "List-Unsubscribe=One-Click"


@dataclass(frozen=True)
class Rendered:
    """One recipient's content: `body` for email and SMS, push URLs for push, and email headers."""

    profile_id: int
    body: str | None = None
    headers: dict[str, str] | None = None
    push_urls: dict[str, str] | None = None


@dataclass(frozen=True)
class MessageInfo:
    message_id: int
    version: int
    channel: str
    resource_id: int | None


class _Bound:
    """A template with its URL prefixes merged into the text: pieces[pos] = a recipient's value."""

    def __init__(self, template: Template, base: str) -> None:
        pieces: list[str | None] = []
        self.clicks: list[int] = []  # positions of link i's value, in link order
        self.shorts: list[tuple[int, int]] = []
        self.singles: list[tuple[int, str]] = []
        for part in template.parts:
            if isinstance(part, str):
                pieces.append(part)
                continue
            kind, index = part
            before, after = _ROUTES[kind]
            pieces.append(base + before)
            position = len(pieces)
            pieces += [None, after]
            if kind == CLICK:
                self.clicks.append(position)
                if index != len(self.clicks) - 1:
                    raise AssertionError("email links are compiled in order")
            elif kind == SHORT:
                self.shorts.append((position, index))
            else:
                self.singles.append((position, kind))
        self.pieces = pieces
        self.kinds = {kind for _, kind in self.singles}


class Renderer:
    """Renders one message version for many recipients; build once per render call."""

    def __init__(self, settings: Settings, template: Template, info: MessageInfo) -> None:
        if template.channel != info.channel:
            raise ValueError("template and message channels differ")
        self.base = settings.public_url
        self.info = info
        self.template = template
        keys = Keyring(settings.signing_keys)
        # Unsubscribe and confirm links carry when they were made, so the edge can let them expire
        # (TRACKER_UNSUBSCRIBE_MAX_AGE_DAYS, TRACKER_CONFIRM_MAX_AGE_DAYS): one or two per recipient.
        self._timed = partial(mint, keys, settings.active_key_id, channel=CHANNEL_IDS[info.channel],
                              message_id=info.message_id, issued_at=int(time.time()))  # fmt: skip
        self.tokens = MessageTokens(
            keys,
            settings.active_key_id,
            CHANNEL_IDS[info.channel],
            info.message_id,
            info.version,
            len(template.links),
        )
        self.bound = _Bound(template, self.base)

    def _fill(self, profile_id: int, codes: dict[tuple[int, int], str] | None) -> tuple[str, dict[str, str]]:
        bound = self.bound
        out = bound.pieces.copy()
        if bound.clicks:
            for position, token in zip(bound.clicks, self.tokens.clicks(profile_id), strict=True):
                out[position] = token
        if bound.shorts:
            assert codes is not None
            for position, index in bound.shorts:
                out[position] = codes[profile_id, index]
        singles: dict[str, str] = {kind: self._single(_KINDS[kind], profile_id) for kind in bound.kinds}
        for position, kind in bound.singles:
            out[position] = singles[kind]
        return "".join(out), singles  # type: ignore[arg-type]

    def _single(self, kind: TokenKind, profile_id: int) -> str:
        if kind in TIMED_KINDS:
            return self._timed(kind=kind, profile_id=profile_id)
        return self.tokens.token(kind, profile_id)

    def email(self, profile_id: int) -> Rendered:
        body, singles = self._fill(profile_id, None)
        headers = {"X-Tracker-Ref": self.tokens.token(TokenKind.REF, profile_id)}
        if self.info.resource_id is not None:
            token = singles.get(UNSUBSCRIBE) or self._single(TokenKind.UNSUBSCRIBE, profile_id)
            headers["List-Unsubscribe"] = f"<{self.base}/u/{token}>"
            headers["List-Unsubscribe-Post"] = ONE_CLICK
        return Rendered(profile_id, body, headers)

    def sms(self, profile_id: int, codes: dict[tuple[int, int], str]) -> Rendered:
        # The ref goes on the gateway's delivery-report URL (e.g. Twilio StatusCallback ?tracker_ref=...).
        headers = {"X-Tracker-Ref": self.tokens.token(TokenKind.REF, profile_id)}
        return Rendered(profile_id, self._fill(profile_id, codes)[0], headers)

    def push(self, profile_id: int) -> Rendered:
        url = f"{self.base}/p/{self.tokens.token(TokenKind.PUSH, profile_id)}"
        return Rendered(
            profile_id, self.template.parts[0] if self.template.parts else "",  # type: ignore[arg-type]
            push_urls={"ack": url + "/ack", "open": url + "/open", "click": url + "/click"},
        )  # fmt: skip

    def emails(self, profile_ids: Iterable[int]) -> Iterator[Rendered]:
        return map(self.email, profile_ids)


class TemplateCache:
    """Compiled templates by (message, version): versions are immutable, so entries never go stale."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[int, int], Template] = OrderedDict()

    def get(self, key: tuple[int, int]) -> Template | None:
        template = self._entries.get(key)
        if template is not None:
            self._entries.move_to_end(key)
        return template

    def put(self, key: tuple[int, int], template: Template) -> None:
        self._entries[key] = template
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)


async def load_template(
    conn: Any, message_id: int, version: int | None = None, cache: TemplateCache | None = None
) -> tuple[MessageInfo, Template]:
    """The message's version (the current one by default) and its compiled template."""
    row = await conn.fetchrow("select channel, resource_id, current_version from messages where id = $1", message_id)
    if row is None:
        raise NotFound("message", message_id)
    version = row["current_version"] if version is None else version
    if version < 1:
        raise InputError("no_content", f"message {message_id} has no content registered yet")
    info = MessageInfo(message_id, version, row["channel"], row["resource_id"])
    template = cache.get((message_id, version)) if cache is not None else None
    if template is None:
        content = await conn.fetchval(
            "select content from link_table_versions where message_id = $1 and version = $2", message_id, version
        )
        if content is None:
            raise NotFound(f"message {message_id} version", version)
        template = compile_template(info.channel, content)
        table = await load_version(conn, message_id, version)
        # A version written by other means (or by an older parser) must not get the wrong link indexes.
        if table is None or [link.url for link in table.links] != [link.url for link in template.links]:
            raise InputError("links_mismatch", f"message {message_id} version {version}: stored links differ "
                             "from its content; register the content again")  # fmt: skip
        if cache is not None:
            cache.put((message_id, version), template)
    return info, template


async def render_message(
    conn: Any,
    settings: Settings,
    message_id: int,
    profile_ids: list[int],
    version: int | None = None,
    redis: Redis | None = None,
    cache: TemplateCache | None = None,
) -> tuple[MessageInfo, list[Rendered]]:
    """Every recipient's content, in the order of `profile_ids` (which must be distinct)."""
    info, template = await load_template(conn, message_id, version, cache)
    renderer = Renderer(settings, template, info)
    if info.channel == "email":
        return info, list(renderer.emails(profile_ids))
    if info.channel == "sms":
        codes = await codes_for(
            conn, message_id, info.version, len(template.links), profile_ids,
            redis=redis, prefix=settings.stream_prefix, ttl_s=settings.edge.api_short_link_ttl_s,
        )  # fmt: skip
        return info, [renderer.sms(profile_id, codes) for profile_id in profile_ids]
    return info, [renderer.push(profile_id) for profile_id in profile_ids]

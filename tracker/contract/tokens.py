"""Self-describing signed tokens: everything the edge needs, verified with no lookup.

Binary layout, then URL-safe base64 without padding:

    byte 0      format (2 bits: 1, or 2 = with issue time) | kind (3 bits) | channel (3 bits)
    byte 1      key id (0-255), so keys can rotate
    format 2    4 bytes: issue time, Unix seconds, big-endian (unsubscribe and confirm tokens)
    next byte   byte lengths (0-8) of the message id (high nibble) and the profile id (low nibble)
    ...         message id, profile id: big-endian, minimal length (0 has length 0)
    for clicks  one more length byte (link-table version | link index), then those two numbers
    MAC         HMAC-SHA256(key, all bytes above), truncated to 9-11 bytes (72-88 bits)

The MAC length is chosen so that the whole token is a multiple of 3 bytes: the
base64 text then has no padding and no unused bits, so every character of the
token is covered by the MAC. Only the URL-safe alphabet is accepted (`+` and `/`
are refused, not read as `-` and `_`), so no two strings decode to the same token.
Format 1 tokens minted before issue times existed still verify; they have no age.
"""

from __future__ import annotations

import binascii
import hashlib
import time
from enum import IntEnum
from hmac import compare_digest
from typing import Any, NamedTuple

_FORMAT = 1
_TIMED = 2  # format 2: format 1 with the issue time after the key id
_MAC_MIN = 9
_CLICK = 2  # TokenKind.CLICK as a plain int: enum comparisons cost on the hot path
MAX_TOKEN_LEN = 96  # characters; longer input is refused before decoding
MAX_KEY_ID = 255  # one byte; the signing keys' ids (TRACKER_SIGNING_KEYS) and report links' too
# `+` and `/` become `.`, which strict base64 decoding refuses: one translate keeps the alphabet URL-safe only.
_TO_STD = bytes.maketrans(b"-_+/", b"+/..")
_TO_URL = bytes.maketrans(b"+/", b"-_")


class TokenKind(IntEnum):
    OPEN = 1
    CLICK = 2
    READ = 3
    UNSUBSCRIBE = 4
    CONFIRM = 5
    PUSH = 6
    # Not a URL: the renderer puts it in a message header (X-Tracker-Ref) so that
    # delivery reports from email and SMS providers can be tied to message and profile.
    REF = 7


# The kinds whose tokens may carry an issue time (format 2), so that a link can expire.
TIMED_KINDS = frozenset({TokenKind.UNSUBSCRIBE, TokenKind.CONFIRM})


class Channel(IntEnum):
    """Every channel, defined here once. A token carries its number (3 bits: at most 7; a number is
    never changed or reused); its name in lower case is how events, the API and Postgres spell it
    (the schema's check constraints, in tracker/contract/migrations, list them too: tests/tracker/test_events.py)."""

    EMAIL = 1
    SMS = 2
    WEB_PUSH = 3
    APP_PUSH = 4
    SITE = 5  # a website's own pixel (edge.site_pixel): events, but no message is sent on it


# Names as they appear in events and in Postgres, keyed by the plain int a token carries.
CHANNEL_NAMES = {int(c): c.name.lower() for c in Channel}
EVENT_CHANNELS = tuple(CHANNEL_NAMES.values())  # every channel an event can be on
MESSAGE_CHANNELS = tuple(CHANNEL_NAMES[c] for c in Channel if c is not Channel.SITE)  # what a message is sent on


class Token(NamedTuple):
    kind: int
    channel: int
    message_id: int
    profile_id: int
    key_id: int
    link_version: int = 0
    link_index: int = 0


class TokenError(ValueError):
    pass


class Keyring:
    """Signing keys with their HMAC-SHA256 pads hashed once (RFC 2104), so a MAC costs two
    SHA-256 state copies instead of a fresh HMAC set-up: about 0.6 us rather than 1.5 us."""

    __slots__ = ("_states",)

    def __init__(self, keys: dict[int, bytes]) -> None:
        self._states: dict[int, tuple[Any, Any]] = {}
        for key_id, key in keys.items():
            if len(key) > 64:
                key = hashlib.sha256(key).digest()
            key = key.ljust(64, b"\0")
            inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
            outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
            self._states[key_id] = (inner, outer)

    def __contains__(self, key_id: int) -> bool:
        return key_id in self._states

    def pads(self, key_id: int) -> tuple[Any, Any] | None:
        """The hashed inner and outer pads of a key (copy them before use), or None."""
        return self._states.get(key_id)

    def mac(self, key_id: int, data: bytes) -> bytes | None:
        """HMAC-SHA256(key, data), or None for an unknown key id."""
        states = self._states.get(key_id)
        if states is None:
            return None
        inner = states[0].copy()
        inner.update(data)
        outer = states[1].copy()
        outer.update(inner.digest())
        return outer.digest()


def keyring(keys: Keyring | dict[int, bytes]) -> Keyring:
    return keys if isinstance(keys, Keyring) else Keyring(keys)


def _put_pair(out: bytearray, first: int, second: int) -> None:
    if first < 0 or second < 0:
        raise TokenError("ids must not be negative")
    if first >= 1 << 64 or second >= 1 << 64:
        raise TokenError("ids must fit in 64 bits")
    a, b = (first.bit_length() + 7) // 8, (second.bit_length() + 7) // 8
    out.append(a << 4 | b)
    out += first.to_bytes(a, "big")
    out += second.to_bytes(b, "big")


def mint(
    keys: Keyring | dict[int, bytes],
    key_id: int,
    kind: TokenKind | int,
    channel: Channel | int,
    message_id: int,
    profile_id: int,
    link_version: int = 0,
    link_index: int = 0,
    issued_at: int | None = None,
) -> str:
    """Make a token. Click tokens carry the link-table version and link index; unsubscribe and
    confirm tokens given `issued_at` (Unix seconds) carry it, so `verify_fresh` can limit their age."""
    kind, channel = TokenKind(kind), Channel(channel)
    keys = keyring(keys)
    if not 0 <= key_id <= 255 or key_id not in keys:
        raise TokenError(f"unknown key id {key_id}")
    if issued_at is None:
        body = bytearray((_FORMAT << 6 | kind << 3 | channel, key_id))
    elif kind not in TIMED_KINDS:
        raise TokenError(f"{kind.name.lower()} tokens carry no issue time")
    elif not 0 <= issued_at < 1 << 32:
        raise TokenError("the issue time must be Unix seconds from 1970 to 2106")
    else:
        body = bytearray((_TIMED << 6 | kind << 3 | channel, key_id))
        body += issued_at.to_bytes(4, "big")
    _put_pair(body, message_id, profile_id)
    if kind == TokenKind.CLICK:
        _put_pair(body, link_version, link_index)
    mac_len = _MAC_MIN + (-(len(body) + _MAC_MIN)) % 3
    body += keys.mac(key_id, bytes(body))[:mac_len]  # type: ignore[index]
    return binascii.b2a_base64(bytes(body), newline=False).translate(_TO_URL).decode()


def verify(keys: Keyring | dict[int, bytes], token: str) -> tuple[int, int, int, int, int, int, int] | None:
    """(kind, channel, message id, profile id, key id, link version, link index) if the token
    is well formed and its MAC checks out, else None.

    Runs on every pixel and click: no exceptions escape, no lookups happen, and the
    result is a plain tuple (a NamedTuple costs more to build). Pass a `Keyring`
    built once; a plain dict works but builds one per call. `parse` names the fields.
    """
    if not isinstance(keys, Keyring):
        keys = Keyring(keys)
    n = len(token)
    if n > MAX_TOKEN_LEN or n % 4 or n < 16:
        return None
    try:
        raw = binascii.a2b_base64(token.encode().translate(_TO_STD), strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    end = len(raw)  # at least 12: the length checks above
    head = raw[0]
    at = 2  # where the id lengths are
    if head >> 6 != _FORMAT:
        if head >> 6 != _TIMED:
            return None
        at = 6
    pads = keys.pads(raw[1])
    if pads is None:
        return None
    kind = (head >> 3) & 7
    lengths = raw[at]
    a, b = lengths >> 4, lengths & 15
    start = at + 1
    pos = start + a + b
    if a > 8 or b > 8 or pos > end:
        return None
    from_bytes = int.from_bytes
    message_id = from_bytes(raw[start : start + a], "big")
    profile_id = from_bytes(raw[start + a : pos], "big")
    link_version = link_index = 0
    if kind == _CLICK:
        if pos >= end:
            return None
        lengths = raw[pos]
        a, b = lengths >> 4, lengths & 15
        start, pos = pos + 1, pos + 1 + a + b
        if a > 8 or b > 8 or pos > end:
            return None
        link_version = from_bytes(raw[start : start + a], "big")
        link_index = from_bytes(raw[start + a : pos], "big")
    mac_len = _MAC_MIN + (-(pos + _MAC_MIN)) % 3
    if end - pos != mac_len:
        return None
    # HMAC inlined (see Keyring.mac): a method call per request is measurable here.
    inner = pads[0].copy()
    inner.update(raw[:pos])
    outer = pads[1].copy()
    outer.update(inner.digest())
    if not compare_digest(outer.digest()[:mac_len], raw[pos:]):
        return None
    return (kind, head & 7, message_id, profile_id, raw[1], link_version, link_index)


def verify_fresh(
    keys: Keyring | dict[int, bytes], token: str, max_age_s: float, now: float | None = None
) -> tuple[tuple[int, int, int, int, int, int, int] | None, bool]:
    """`verify` with an age limit, for unsubscribe and confirm links: (fields, expired).

    (fields, False): the token is good and at most `max_age_s` old, or carries no issue time
    (minted before tokens had one), or `max_age_s` is 0 (no limit); (None, True): the token
    is genuine but older than that; (None, False): it is not a valid token at all.
    """
    fields = verify(keys, token)
    if fields is None or max_age_s <= 0:
        return fields, False
    issued = issued_at(token)
    if issued is not None and (time.time() if now is None else now) - issued > max_age_s:
        return None, True
    return fields, False


def issued_at(token: str) -> int | None:
    """The issue time (Unix seconds) a token carries, or None. Reads, does not verify: call `verify` first."""
    try:
        raw = binascii.a2b_base64(token.encode().translate(_TO_STD), strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) < 7 or raw[0] >> 6 != _TIMED:
        return None
    return int.from_bytes(raw[2:6], "big")


def parse(keys: Keyring | dict[int, bytes], token: str) -> Token | None:
    """`verify` with named fields, for code off the hot path."""
    fields = verify(keys, token)
    return None if fields is None else Token(*fields)

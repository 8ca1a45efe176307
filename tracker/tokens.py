"""Self-describing signed tokens: everything the edge needs, verified with no lookup.

Binary layout, then URL-safe base64 without padding:

    byte 0      format (2 bits, = 1) | kind (3 bits) | channel (3 bits)
    byte 1      key id (0-255), so keys can rotate
    varints     message id, profile id, then for clicks: link-table version, link index
    MAC         HMAC-SHA256(key, all bytes above), truncated to 9-11 bytes (72-88 bits)

The MAC length is chosen so that the whole token is a multiple of 3 bytes: the
base64 text then has no padding and no unused bits, so every character of the
token is covered by the MAC (no two strings decode to the same token).
"""

from __future__ import annotations

import binascii
import hmac
from enum import IntEnum
from typing import NamedTuple

_FORMAT = 1
_MAC_MIN = 9
MAX_TOKEN_LEN = 96  # characters; longer input is refused before decoding
_TO_STD = str.maketrans("-_", "+/")
_TO_URL = bytes.maketrans(b"+/", b"-_")


class TokenKind(IntEnum):
    OPEN = 1
    CLICK = 2
    READ = 3
    UNSUBSCRIBE = 4
    CONFIRM = 5
    PUSH = 6


class Channel(IntEnum):
    EMAIL = 1
    SMS = 2
    WEB_PUSH = 3
    APP_PUSH = 4
    SITE = 5


# Names as they appear in events and in Postgres.
CHANNEL_NAMES = {c: c.name.lower() for c in Channel}


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


def _put_varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise TokenError("ids must not be negative")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def mint(
    keys: dict[int, bytes],
    key_id: int,
    kind: TokenKind | int,
    channel: Channel | int,
    message_id: int,
    profile_id: int,
    link_version: int = 0,
    link_index: int = 0,
) -> str:
    """Make a token. Click tokens carry the link-table version and link index."""
    kind, channel = TokenKind(kind), Channel(channel)
    if not 0 <= key_id <= 255 or key_id not in keys:
        raise TokenError(f"unknown key id {key_id}")
    body = bytearray((_FORMAT << 6 | kind << 3 | channel, key_id))
    _put_varint(body, message_id)
    _put_varint(body, profile_id)
    if kind == TokenKind.CLICK:
        _put_varint(body, link_version)
        _put_varint(body, link_index)
    mac_len = _MAC_MIN + (-(len(body) + _MAC_MIN)) % 3
    body += hmac.digest(keys[key_id], bytes(body), "sha256")[:mac_len]
    return binascii.b2a_base64(bytes(body), newline=False).translate(_TO_URL).decode()


def verify(keys: dict[int, bytes], token: str) -> Token | None:
    """The token's contents if it is well formed and its MAC checks out, else None.

    Runs on every pixel and click: no exceptions escape, no lookups happen.
    """
    n = len(token)
    if n > MAX_TOKEN_LEN or n % 4 or n < 16:
        return None
    try:
        raw = binascii.a2b_base64(token.translate(_TO_STD), strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    head = raw[0]
    if head >> 6 != _FORMAT:
        return None
    key = keys.get(raw[1])
    if key is None:
        return None
    kind = (head >> 3) & 7
    values = [0, 0, 0, 0]
    wanted = 4 if kind == TokenKind.CLICK else 2
    pos = 2
    end = len(raw)
    for slot in range(wanted):
        value = shift = 0
        while True:
            if pos >= end or shift > 63:
                return None
            byte = raw[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        values[slot] = value
    mac_len = _MAC_MIN + (-(pos + _MAC_MIN)) % 3
    if end - pos != mac_len:
        return None
    if not hmac.compare_digest(hmac.digest(key, raw[:pos], "sha256")[:mac_len], raw[pos:]):
        return None
    return Token(kind, head & 7, values[0], values[1], raw[1], values[2], values[3])

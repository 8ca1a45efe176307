"""Many tokens of one message at once: the bytes `tracker.contract.tokens.mint` makes, faster.

Rendering 10,000 recipients of a message with 30 links mints 300,000 click
tokens; `mint` spends about 4 us on each (enum conversions, a fresh HMAC
computation from the pads). Here the parts shared by all tokens of one
recipient are done once: the header bytes, the link suffixes, and the inner
HMAC state after the recipient's prefix, so a click token costs two SHA-256
state copies and a base64 step (about 1.2 us). The layout is the one
documented in `tracker.contract.tokens`; tests check both produce the same strings.
"""

from __future__ import annotations

import binascii
from typing import Any

from tracker.contract.tokens import Channel, Keyring, TokenKind

_FORMAT = 1
_MAC_MIN = 9
_TO_URL = bytes.maketrans(b"+/", b"-_")
_b64 = binascii.b2a_base64


def _pair(first: int, second: int) -> bytes:
    if not 0 <= first < 1 << 64 or not 0 <= second < 1 << 64:
        raise ValueError("ids must be from 0 to 2**64-1")
    a, b = (first.bit_length() + 7) // 8, (second.bit_length() + 7) // 8
    return bytes((a << 4 | b,)) + first.to_bytes(a, "big") + second.to_bytes(b, "big")


class MessageTokens:
    """Mints the tokens of one message (one channel, one link-table version) for many profiles."""

    __slots__ = ("_heads", "_inner", "_message_id", "_outer", "_suffixes")

    def __init__(self, keys: Keyring, key_id: int, channel: Channel, message_id: int, version: int, links: int) -> None:
        pads = keys.pads(key_id)
        if pads is None or not 0 <= key_id <= 255:
            raise ValueError(f"unknown key id {key_id}")
        self._inner, self._outer = pads
        self._message_id = message_id
        self._heads = {kind: bytes((_FORMAT << 6 | kind << 3 | Channel(channel), key_id)) for kind in TokenKind}
        self._suffixes = [_pair(version, index) for index in range(links)]

    def _finish(self, body: bytes, inner: Any) -> str:
        outer = self._outer.copy()
        outer.update(inner.digest())
        mac = outer.digest()[: _MAC_MIN + (-(len(body) + _MAC_MIN)) % 3]
        return _b64(body + mac, newline=False).translate(_TO_URL).decode()

    def token(self, kind: TokenKind, profile_id: int) -> str:
        """One token without a link: open, read, unsubscribe, confirm, push or ref."""
        body = self._heads[kind] + _pair(self._message_id, profile_id)
        inner = self._inner.copy()
        inner.update(body)
        return self._finish(body, inner)

    def clicks(self, profile_id: int) -> list[str]:
        """The click token of every link, in link-index order."""
        prefix = self._heads[TokenKind.CLICK] + _pair(self._message_id, profile_id)
        state = self._inner.copy()
        state.update(prefix)
        outer_base = self._outer
        out = []
        append = out.append
        for suffix in self._suffixes:
            inner = state.copy()
            inner.update(suffix)
            outer = outer_base.copy()
            outer.update(inner.digest())
            body = prefix + suffix
            body += outer.digest()[: _MAC_MIN + (-(len(body) + _MAC_MIN)) % 3]
            append(_b64(body, newline=False).translate(_TO_URL).decode())
        return out

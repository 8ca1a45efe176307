"""The event wire format: one msgspec Struct, msgpack on the streams.

`array_like=True` keeps entries small and encoding fast (fields go by position),
so fields are only ever appended, never reordered or removed.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec

from tracker.contract.tokens import EVENT_CHANNELS

KINDS = frozenset(
    {
        "sent",
        "delivered",
        "deferred",  # a provider will retry: not final, not a bounce
        "undelivered",
        "soft_bounce",
        "hard_bounce",
        "complained",
        "opened",
        "read",
        "clicked",
        "confirmed",
        "unsubscribed",
        "subscribed",
        "push_delivered",
        "push_opened",
        "push_clicked",
        "site_action",
    }
)
# Channel names are defined once, with the numbers tokens carry: tracker.contract.tokens.Channel.
CHANNELS = frozenset(EVENT_CHANNELS)


class Event(msgspec.Struct, array_like=True, omit_defaults=False):
    id: bytes  # 16 bytes, UUIDv7 layout: time-ordered, unique per edge process
    kind: str
    channel: str
    message_id: int
    profile_id: int
    ts_us: int  # microseconds since the epoch, when the edge accepted it
    link_version: int = 0
    link_index: int = -1  # -1: no link
    ua_class: str = ""
    ip_prefix: str = ""
    data: dict[str, Any] | None = None  # kind-specific facts: dwell seconds, push action, carrier code
    # Request facts for the human-or-machine verdict (tracker.contract.signals); the edge sets them.
    signals: int = 0
    ua_family: str = ""  # e.g. "gmail", "mimecast", "python-requests"; "" when not known
    # The verdict, set by the flusher (never by the edge): "human", "machine" or "unknown", and why.
    verdict: str = ""
    reasons: tuple[str, ...] = ()


# The hot-path layout. The edge does not build Events per request: it builds plain tuples of an
# Event's fields in this order, which encode to the same msgpack array (array_like): the tuple IS
# the wire record. Modules that build such tuples check at import that they write this order
# (`require_event_layout`); modules that read them use the positions below.
EVENT_FIELDS: tuple[str, ...] = Event.__struct_fields__
PROFILE_AT = EVENT_FIELDS.index("profile_id")  # the shard key (tracker.contract.keys.shard_for)


def require_event_layout(fields: tuple[str, ...], builder: str) -> None:
    """Fail at import when a tuple builder's field order is not the Event's (costs nothing per event).

    A builder may stop before the last fields: a shorter array decodes with their defaults.
    """
    if len(fields) < PROFILE_AT + 2 or EVENT_FIELDS[: len(fields)] != fields:
        raise RuntimeError(f"{builder} builds event tuples as {fields}, but the Event's fields are {EVENT_FIELDS}")


# Encodes an Event, or a tuple of its fields in EVENT_FIELDS order: the same bytes either way.
encode_event = msgspec.msgpack.Encoder().encode
decode_event = msgspec.msgpack.Decoder(Event).decode

# A stream entry carries a batch: one msgpack array of Events. One XADD per shard and
# batch costs the edge about 0.5 us per event, against 13-20 us for an entry per event.
decode_batch = msgspec.msgpack.Decoder(list[Event]).decode
# When a batch does not decode, its elements are split out and decoded one by one,
# so that only the bad event goes to the dead letters.
split_batch = msgspec.msgpack.Decoder(list[msgspec.Raw]).decode


def encode_batch(payloads: list[bytes]) -> bytes:
    """A msgpack array made of already-encoded Events (no re-encoding)."""
    n = len(payloads)
    if n < 16:
        header = bytes((0x90 | n,))
    elif n < 1 << 16:
        header = b"\xdc" + n.to_bytes(2, "big")
    else:
        header = b"\xdd" + n.to_bytes(4, "big")
    return header + b"".join(payloads)


# Ids whose 48 time bits are zero: reports whose provider sends no event time, stored at the time
# they arrived. A redelivery arrives later, so only the id (not the id and time) can say it is the
# same report; the flusher looks such ids up across a few days (flusher.sink).
TIMELESS_ID_PREFIX = bytes(6)


class EventIds:
    """UUIDv7-style ids: 48-bit ms time, then a per-process random node and a counter.

    The counter makes ids unique within a process with no syscall per id; the
    62 random-or-counter bits keep processes apart. Ids sort by time to the ms.
    Layout: 48 time | 4 version | 12 high counter | 2 variant | 30 node | 32 low counter.
    """

    __slots__ = ("_base", "_counter")

    def __init__(self) -> None:
        node = int.from_bytes(os.urandom(4), "big") & 0x3FFFFFFF  # 30 bits
        self._base = 0x7 << 76 | 0b10 << 62 | node << 32
        self._counter = int.from_bytes(os.urandom(2), "big")

    def new(self, now_ms: int | None = None) -> bytes:
        if now_ms is None:
            now_ms = time.time_ns() // 1_000_000
        self._counter = counter = (self._counter + 1) & 0xFFFFFFFFFFF  # 44 bits
        return (now_ms << 80 | self._base | (counter >> 32) << 64 | (counter & 0xFFFFFFFF)).to_bytes(16, "big")

"""A batch of stream entries: decoded as they arrive, bad ones set aside with a reason.

Entries are decoded when added, so decoding overlaps the Postgres write of the
previous batch. Every entry id is kept for the acknowledgement, whatever became
of the entry; an event id seen twice in one batch is stored once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import msgspec

from tracker.events import CHANNELS, KINDS, Event, decode_event
from tracker.keys import ENTRY_FIELD


@dataclass(frozen=True, slots=True)
class Fault:
    """An entry that goes to the dead-letter stream instead of Postgres."""

    stream: str
    entry_id: bytes
    payload: bytes
    reason: str


@dataclass(slots=True)
class Source:
    """Where an event came from, to dead-letter it if Postgres turns it down."""

    stream: str
    entry_id: bytes
    payload: bytes


@dataclass(slots=True)
class Batch:
    started: float = field(default_factory=time.monotonic)
    size: int = 0  # entries, all outcomes
    nbytes: int = 0
    acks: dict[str, list[bytes]] = field(default_factory=dict)
    events: dict[bytes, tuple[Event, Source]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    duplicates: int = 0  # same event id twice in this batch

    def add(self, stream: str, entries: list) -> None:
        """Add raw XREADGROUP/XAUTOCLAIM entries of one stream: `[[id, [field, value, ...]], ...]`."""
        acks = self.acks.setdefault(stream, [])
        events = self.events
        for entry_id, fields in entries:
            acks.append(entry_id)
            self.size += 1
            if fields is None:
                # Pending, but deleted from the stream meanwhile: nothing to store, only to acknowledge.
                continue
            payload = _payload(fields)
            if payload is None:
                self.faults.append(Fault(stream, entry_id, _flatten(fields), "no 'e' field in the entry"))
                continue
            self.nbytes += len(payload)
            try:
                event = decode_event(payload)
            except msgspec.DecodeError as exc:
                self.faults.append(Fault(stream, entry_id, payload, f"undecodable: {exc}"))
                continue
            problem = _problem(event)
            if problem:
                self.faults.append(Fault(stream, entry_id, payload, problem))
            elif event.id in events:
                self.duplicates += 1
            else:
                events[event.id] = (event, Source(stream, entry_id, payload))

    def reject(self, event_id: bytes, reason: str) -> None:
        """Move a decoded event to the faults (found bad by the sink)."""
        _event, source = self.events.pop(event_id)
        self.faults.append(Fault(source.stream, source.entry_id, source.payload, reason))

    @property
    def age(self) -> float:
        return time.monotonic() - self.started

    def __len__(self) -> int:
        return self.size


def _payload(fields: list) -> bytes | None:
    if len(fields) == 2 and fields[0] == ENTRY_FIELD:
        return fields[1]
    for index in range(0, len(fields) - 1, 2):
        if fields[index] == ENTRY_FIELD:
            return fields[index + 1]
    return None


def _flatten(fields: list) -> bytes:
    return b" ".join(bytes(part) for part in fields)


def _problem(event: Event) -> str:
    if event.kind not in KINDS:
        return f"unknown kind {event.kind!r}"
    if event.channel not in CHANNELS:
        return f"unknown channel {event.channel!r}"
    if len(event.id) != 16:
        return f"event id of {len(event.id)} bytes, expected 16"
    if event.message_id <= 0 or event.profile_id < 0:
        return f"bad message or profile id ({event.message_id}, {event.profile_id})"
    return ""

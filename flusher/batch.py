"""A batch of stream entries: decoded as they arrive, bad events set aside with a reason.

Each stream entry holds a msgpack array of events (`tracker.contract.events.encode_batch`).
Entries are decoded when added, so decoding overlaps the Postgres write of the
previous batch. An entry that does not decode whole is split into its events,
so only the bad ones go to the dead letters. Every entry id is kept for the
acknowledgement, whatever became of its events; an event id seen twice in one
batch is stored once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import msgspec

from tracker.contract.events import CHANNELS, KINDS, Event, decode_batch, decode_event, encode_event, split_batch
from tracker.contract.keys import ENTRY_FIELD


@dataclass(frozen=True, slots=True)
class Fault:
    """An entry that goes to the dead-letter stream instead of Postgres."""

    stream: str
    entry_id: bytes
    payload: bytes
    reason: str


@dataclass(slots=True)
class Batch:
    started: float = field(default_factory=time.monotonic)
    size: int = 0  # events, whatever their outcome
    entries: int = 0
    nbytes: int = 0
    acks: dict[str, list[bytes]] = field(default_factory=dict)
    # event id -> (event, stream, entry id): where it came from, to dead-letter it if Postgres turns it down
    events: dict[bytes, tuple[Event, str, bytes]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    duplicates: int = 0  # same event id twice in this batch

    def add(self, stream: str, entries: list) -> None:
        """Add raw XREADGROUP/XAUTOCLAIM entries of one stream: `[[id, [field, value, ...]], ...]`."""
        acks = self.acks.setdefault(stream, [])
        for entry_id, fields in entries:
            acks.append(entry_id)
            self.entries += 1
            if fields is None:
                # Pending, but deleted from the stream meanwhile: nothing to store, only to acknowledge.
                continue
            payload = _payload(fields)
            if payload is None:
                self._fault(stream, entry_id, _flatten(fields), "no 'e' field in the entry")
                continue
            self.nbytes += len(payload)
            try:
                decoded = decode_batch(payload)
            except (msgspec.DecodeError, TypeError, ValueError):
                self._add_one_by_one(stream, entry_id, payload)
                continue
            for event in decoded:
                self._add_event(stream, entry_id, event)

    def _add_event(self, stream: str, entry_id: bytes, event: Event, payload: bytes | None = None) -> None:
        self.size += 1
        problem = _problem(event)
        if problem:
            self.faults.append(Fault(stream, entry_id, payload or encode_event(event), problem))
        elif event.id in self.events:
            self.duplicates += 1
        else:
            self.events[event.id] = (event, stream, entry_id)

    def _add_one_by_one(self, stream: str, entry_id: bytes, payload: bytes) -> None:
        try:
            parts = [bytes(raw) for raw in split_batch(payload)]
        except (msgspec.DecodeError, TypeError, ValueError) as exc:
            try:
                # An entry of one bare event, as entries were first written.
                self._add_event(stream, entry_id, decode_event(payload), payload)
            except (msgspec.DecodeError, TypeError, ValueError):
                self._fault(stream, entry_id, payload, f"undecodable entry: {exc}")
            return
        for part in parts:
            try:
                event = decode_event(part)
            except (msgspec.DecodeError, TypeError, ValueError) as exc:
                self._fault(stream, entry_id, part, f"undecodable event: {exc}")
                continue
            self._add_event(stream, entry_id, event, part)

    def _fault(self, stream: str, entry_id: bytes, payload: bytes, reason: str) -> None:
        self.size += 1
        self.faults.append(Fault(stream, entry_id, payload, reason))

    def drop_duplicate(self, event_id: bytes) -> None:
        """Forget an event found stored already under another time (a provider's redelivery)."""
        del self.events[event_id]
        self.duplicates += 1

    def reject(self, event_id: bytes, reason: str) -> None:
        """Move a decoded event to the faults (found bad by the sink)."""
        event, stream, entry_id = self.events.pop(event_id)
        self.faults.append(Fault(stream, entry_id, encode_event(event), reason))

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
    # Website actions need not come from a message: they carry message 0.
    if event.message_id < 0 or event.profile_id < 0 or (event.message_id == 0 and event.kind != "site_action"):
        return f"bad message or profile id ({event.message_id}, {event.profile_id})"
    return ""

"""What a destination is given and promises: `send(delivery)` returns the destination's answer or raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tracker.contract.events import Event


class DeliveryFailed(Exception):
    """The destination did not acknowledge; the message says what it answered (no secrets)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """Events for one hook, in commit order. `batch_id` is the same on every retry of these events."""

    hook_id: int
    batch_id: str
    events: list[Event]


class Destination(Protocol):
    async def send(self, delivery: Delivery) -> str: ...

    async def close(self) -> None: ...

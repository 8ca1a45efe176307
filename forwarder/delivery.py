"""What a destination is given and promises: `send(delivery)` returns the answer's class or raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tracker.contract.events import Event


class DeliveryFailed(Exception):
    """The destination did not acknowledge.

    The message is what is stored and shown (`last_error`, dead letters, visible to read-only
    API keys): a status code or the kind of failure, never the destination's own words, which
    could be anything it holds. `answer` is the class a test delivery reports ("5xx", "connect
    failed"), the same for a refused connection and a timeout; `detail` goes to the forwarder's
    log only.
    """

    def __init__(self, summary: str, *, answer: str = "failed", detail: str = "") -> None:
        super().__init__(summary)
        self.answer = answer
        self.detail = detail or summary


# A test delivery's answer for any failure to get a reply at all: refused, timed out, reset, not
# resolved. One text, so that a test cannot tell an open port from a closed one.
NO_ANSWER = "connect failed"
REFUSED = "destination not allowed"


@dataclass(frozen=True, slots=True)
class Delivery:
    """Events for one hook, in commit order. `batch_id` is the same on every retry of these events."""

    hook_id: int
    batch_id: str
    events: list[Event]


class Destination(Protocol):
    async def send(self, delivery: Delivery) -> str:
        """Returns the answer's class for a test ("2xx", "confirmed"); raises DeliveryFailed."""
        ...

    async def close(self) -> None: ...

"""One way to record an event from any route: the Event's fields as a tuple, into the buffer."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tracker.contract.events import require_event_layout
from tracker.contract.tokens import CHANNEL_NAMES

if TYPE_CHECKING:
    from edge.state import EdgeState

# The tuple `Capture.__call__` builds: an Event's fields in the contract's order (the tuple is the wire record).
_BUILDS = ("id", "kind", "channel", "message_id", "profile_id", "ts_us", "link_version", "link_index", "ua_class",
           "ip_prefix", "data", "signals", "ua_family")  # fmt: skip
require_event_layout(_BUILDS, __name__)


class Capture:
    """`capture(kind, channel, message_id, profile_id, scope, ...)` queues one event.

    Everything it needs is bound once; a call does no I/O, so routes never wait
    on the network to record what happened.
    """

    __slots__ = ("_add", "_facts", "_new_id")

    def __init__(self, state: EdgeState) -> None:
        self._add = state.events.add
        self._new_id = state.ids.new
        self._facts = state.facts.of

    def __call__(
        self,
        kind: str,
        channel: int,
        message_id: int,
        profile_id: int,
        scope: dict,
        link_version: int = 0,
        link_index: int = -1,
        data: dict[str, Any] | None = None,
    ) -> None:
        ua_class, family, ip, signals = self._facts(scope)
        now_us = time.time_ns() // 1000
        # An Event's fields in `_BUILDS` order, checked against tracker.contract.events at import.
        self._add(
            (self._new_id(now_us // 1000), kind, CHANNEL_NAMES.get(channel, "email"), message_id, profile_id,
             now_us, link_version, link_index, ua_class, ip, data, signals, family),
            128 if data is None else 128 + 64 * len(data),
        )  # fmt: skip

"""What the stream consumers publish about themselves to Redis, as JSON, for the edge's /metrics and `tracker stats`.

    flusher   FlusherMetricsSnapshot  at flusher_metrics_key, every few seconds (flusher/metrics.py)
              FlusherHeartbeatFacts   at flusher_heartbeat_key, with the heartbeat
    forwarder ForwarderMetricsSnapshot at forwarder_metrics_key, with the heartbeat (per hook: HookMetrics)
              ForwarderHeartbeatFacts at forwarder_heartbeat_key

Field names are the JSON keys, so they never change; fields are only added,
each with a default, so a reader decodes what an older or newer writer wrote
(unknown keys are ignored). `decode` gives None for a snapshot that is not
one, which readers skip.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

S = TypeVar("S", bound=msgspec.Struct)

class CommitSeconds(msgspec.Struct):
    """A Prometheus-style histogram of the flusher's Postgres commits: cumulative counts by upper bound."""

    buckets: dict[str, int] = {}
    sum: float = 0.0
    count: int = 0


class FlusherMetricsSnapshot(msgspec.Struct):
    consumer: str = ""
    batches: int = 0
    rows_written: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    lag_s: float = 0.0  # age of the oldest entry the group has not finished with, over every shard
    commit_seconds: CommitSeconds = msgspec.field(default_factory=CommitSeconds)
    at: float | None = None  # unix seconds
    # Opens and clicks judged, by "verdict/reason" (an event counts once for each of its reasons).
    verdicts: dict[str, int] = msgspec.field(default_factory=dict)
    # Seconds spent in each step of storing a batch (flusher.sink), in the order a batch runs them.
    step_seconds: dict[str, float] = msgspec.field(default_factory=dict)


class FlusherHeartbeatFacts(msgspec.Struct):
    consumer: str = ""
    pid: int | None = None
    at: float | None = None  # unix seconds
    batches: int = 0
    entries: int = 0
    events: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    trimmed: int = 0
    settled: int = 0  # clicks past their settle window (effects applied or judged a machine's)


class HookMetrics(msgspec.Struct):
    """One hook's counts in one forwarder since it started."""

    delivered: int = 0  # events acknowledged by the destination
    deliveries: int = 0  # sends acknowledged
    failed_attempts: int = 0  # sends that failed (each retry counts)
    dead_lettered: int = 0  # events
    send_seconds: float = 0.0  # time in acknowledged sends
    state: str = ""  # active, paused, failing as the worker sees it; stopped: it has no runner now
    failures_in_a_row: int = 0


class ForwarderMetricsSnapshot(msgspec.Struct):
    consumer: str = ""
    at: float | None = None
    hooks: dict[str, HookMetrics] = {}  # by hook id


class ForwarderHeartbeatFacts(msgspec.Struct):
    consumer: str = ""
    pid: int | None = None
    at: float | None = None
    hooks: int = 0  # runners
    delivered: int = 0  # events, all hooks


_encoder = msgspec.json.Encoder()
# Built once, at import: one decoder per snapshot kind.
_DECODERS = {kind: msgspec.json.Decoder(kind) for kind in (
    FlusherMetricsSnapshot, FlusherHeartbeatFacts, ForwarderMetricsSnapshot, ForwarderHeartbeatFacts)}  # fmt: skip


def encode(snapshot: msgspec.Struct) -> bytes:
    return _encoder.encode(snapshot)


def decode(raw: bytes | str | None, kind: type[S]) -> S | None:
    """The snapshot in `raw`, or None when there is none or it is not one."""
    if not raw:
        return None
    try:
        return _DECODERS[kind].decode(raw)
    except msgspec.DecodeError:  # also a ValidationError: JSON, but not this snapshot
        return None

"""Action hooks in the edge's `GET /metrics`: backlogs from Redis, the hooks workers' published counts.

Backlog per hook (pending + unread entries of its groups on the committed
streams, Redis 7's `lag`) is read at scrape time. Counts come from each hooks
worker's snapshot (forwarder/worker.py), refreshed with its heartbeat
and found through the workers set, so no key is ever SCANned. Everything is
bounded by one second: a slow Redis costs a comment line, not the scrape.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.exceptions import RedisError

from edge.prom_text import sample
from tracker.contract.keys import committed_streams, forwarder_metrics_key, forwarders_set_key, hook_of_group
from tracker.contract.snapshots import ForwarderMetricsSnapshot, decode
from tracker.streams.unread import COUNT_UP_TO, queue_unread, unread_of

_STATES = ("active", "paused", "failing", "stopped")

# (snapshot field, metric, type, help)
_COUNTS = (
    ("delivered", "hooks_delivered_events_total", "counter", "Events acknowledged by the destination"),
    ("deliveries", "hooks_deliveries_total", "counter", "Deliveries (batches or messages) acknowledged"),
    ("failed_attempts", "hooks_failed_attempts_total", "counter", "Delivery attempts that failed (each retry counts)"),
    ("dead_lettered", "hooks_dead_lettered_events_total", "counter", "Events moved to the hook's dead letters"),
    ("failures_in_a_row", "hooks_failures_in_a_row", "gauge", "Failed attempts since the last success"),
)


async def hooks_text(redis: Any, prefix: str, shards: int) -> str:
    try:
        async with asyncio.timeout(1.0):
            async with redis.pipeline(transaction=False) as pipe:
                for stream in committed_streams(prefix, shards):
                    pipe.xinfo_groups(stream)
                pipe.smembers(forwarders_set_key(prefix))
                replies = await pipe.execute(raise_on_error=False)
            names = sorted(n.decode() for n in replies[-1]) if isinstance(replies[-1], set) else []
            raws = await redis.mget([forwarder_metrics_key(prefix, name) for name in names]) if names else []
    except (RedisError, OSError, TimeoutError) as exc:
        return f"# hooks metrics unavailable: {type(exc).__name__}\n"
    backlog: dict[str, int] = {}
    uncounted: list[tuple[str, str, dict]] = []  # (hook, stream, group): Redis gave no lag (before 7, after a trim)
    for stream, groups in zip(committed_streams(prefix, shards), replies[:-1], strict=True):
        for group in groups if isinstance(groups, list) else []:  # an error: no committed stream yet
            hook_id = hook_of_group(group.get("name", b""))
            if hook_id is None:
                continue
            hook, lag = str(hook_id), unread_of(group)
            backlog[hook] = backlog.get(hook, 0) + int(group.get("pending") or 0) + (lag or 0)
            if lag is None:
                uncounted.append((hook, stream, group))
    if uncounted:
        try:
            async with asyncio.timeout(1.0), redis.pipeline(transaction=False) as pipe:
                for _hook, stream, group in uncounted:
                    queue_unread(pipe, stream, group)
                counted = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError, TimeoutError) as exc:
            return f"# hooks metrics unavailable: {type(exc).__name__}\n"
        for (hook, _stream, group), count in zip(uncounted, counted, strict=True):
            backlog[hook] += unread_of(group, count) or 0
    snapshots = [snapshot for raw in raws if (snapshot := decode(raw, ForwarderMetricsSnapshot))]
    return render_hooks_metrics(backlog, snapshots)


def render_hooks_metrics(backlog: dict[str, int], snapshots: list[ForwarderMetricsSnapshot],
                         now: float | None = None) -> str:  # fmt: skip
    if not backlog and not snapshots:
        return ""
    now = time.time() if now is None else now
    lines = ["# HELP hooks_backlog_entries Committed-stream entries a hook has not acknowledged"
             f" (a lower bound where Redis knows no lag and over {COUNT_UP_TO} entries are past and before the cursor)",
             "# TYPE hooks_backlog_entries gauge"]  # fmt: skip
    lines += [sample("hooks_backlog_entries", {"hook": hook}, count) for hook, count in sorted(backlog.items())]
    per_hook = [(snap.consumer, hook, facts) for snap in snapshots for hook, facts in sorted(snap.hooks.items())]
    for key, name, kind, help_text in _COUNTS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [sample(name, {"consumer": c, "hook": h}, getattr(facts, key)) for c, h, facts in per_hook]
    lines += ["# HELP hooks_send_seconds Time in acknowledged sends", "# TYPE hooks_send_seconds summary"]
    for consumer, hook, facts in per_hook:
        labels = {"consumer": consumer, "hook": hook}
        lines.append(sample("hooks_send_seconds_sum", labels, facts.send_seconds))
        lines.append(sample("hooks_send_seconds_count", labels, facts.deliveries))
    lines += ["# HELP hooks_state 1 for the hook's state as its worker sees it",
              "# TYPE hooks_state gauge"]  # fmt: skip
    for consumer, hook, facts in per_hook:
        for state in _STATES:
            lines.append(sample("hooks_state", {"consumer": consumer, "hook": hook, "state": state},
                                 facts.state == state))  # fmt: skip
    lines += ["# HELP hooks_snapshot_age_seconds Seconds since the hooks worker published",
              "# TYPE hooks_snapshot_age_seconds gauge"]  # fmt: skip
    for snap in snapshots:
        age = max(0.0, now - (now if snap.at is None else snap.at))
        lines.append(sample("hooks_snapshot_age_seconds", {"consumer": snap.consumer}, age))
    return "\n".join(lines) + "\n"

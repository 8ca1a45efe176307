"""`tracker stats` output: the JSON document, and the screen for people."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from tracker.ops.stats_format import age, bytes_human, num, table
from tracker.ops.stats_hooks import render_hooks
from tracker.ops.stats_model import Stats

_MEMORY_WARN = 0.8  # the share of maxmemory past which the edge soon spools (tracker doctor warns there too)


def to_json(stats: Stats) -> str:
    return msgspec.json.encode(stats).decode()


def render(stats: Stats) -> str:
    r = stats.redis
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stats.at))
    lines = [
        f"tracker stats  {when}  prefix {stats.prefix!r}",
        f"Redis {r.version} at {r.url}: {r.ops_per_sec:,} ops/s, {r.connected_clients} clients",
        *_redis_lines(stats),
        "",
        "Event streams",
    ]
    rows = [("stream", "length", "memory", "group", "pending", "oldest pending", "unread", "oldest unread",
             "last delivered")]  # fmt: skip
    consumer_lines = []
    for s in stats.streams:
        memory = "-" if s.memory_bytes is None else bytes_human(s.memory_bytes)
        if not s.groups:
            rows.append((s.stream, f"{s.length:,}", memory, "(no group)", "-", "-", "-", "-", "-"))
        for g in s.groups:
            unread = "?" if g.unread is None else f"{g.unread:,}"
            rows.append((s.stream, f"{s.length:,}", memory, g.name, f"{g.pending:,}", age(g.oldest_pending_age_s),
                         unread, age(g.oldest_unread_age_s), g.last_delivered_id))  # fmt: skip
            for c in g.consumers:
                consumer_lines.append((s.stream, g.name, c.name, f"{c.pending:,}", age(c.idle_s)))
    lines += table(rows, right={1, 2, 4, 5, 6, 7})
    lines += ["", "Consumers"]
    if consumer_lines:
        lines += table([("stream", "group", "consumer", "pending", "idle"), *consumer_lines], right={3, 4})
    else:
        lines.append("  none registered")
    d = stats.dead_letters
    newest = f", newest {age(d.newest_age_s)} ago: {d.newest_reason}" if d.length and d.newest_reason else ""
    memory = f" ({bytes_human(d.memory_bytes)})" if d.memory_bytes else ""
    lines += ["", f"Dead letters: {d.length:,} in {d.stream}{memory}{newest}", "", "Flushers"]
    beats = {b.consumer: b for b in stats.flushers}
    metrics = {m.get("consumer", "?"): m for m in stats.flusher_metrics}
    if beats or metrics:
        rows = [("consumer", "heartbeat", "batches", "rows written", "duplicates", "dead", "lag", "commit avg",
                 "metrics age")]  # fmt: skip
        for consumer in sorted(beats.keys() | metrics.keys()):
            beat, m = beats.get(consumer), metrics.get(consumer, {})
            alive = f"alive, {age(beat.age_s)} ago" if beat else "none"
            commit = m.get("commit_seconds") or {}
            avg = f"{commit['sum'] / commit['count'] * 1000:.1f} ms" if commit.get("count") else "-"
            at = m.get("at")
            rows.append((consumer, alive, num(m.get("batches")), num(m.get("rows_written")),
                         num(m.get("duplicates")), num(m.get("dead_lettered")),
                         age(m.get("lag_s")) if m else "-", avg,
                         age(stats.at - at) if isinstance(at, int | float) else "-"))  # fmt: skip
        lines += table(rows, right={2, 3, 4, 5, 6, 7, 8})
        lines += _step_lines(metrics)
    else:
        lines.append("  no live heartbeat and no metrics: no flusher is running")
    sp = stats.spool
    lines += ["", f"Edge spool on {sp.host}: {sp.directory}  ({sp.note})"]
    if not sp.exists:
        lines.append("  folder does not exist (nothing was ever spooled here)")
    elif not sp.files:
        lines.append("  empty: every edge worker here writes to Redis")
    else:
        rows = [("file", "size", "replayed", "last write", "state")]
        for f in sp.files:
            state = f"held by pid {f.holder_pid}" if f.holder_pid else "held" if f.locked else "orphan, awaiting replay"
            rows.append((f.name, bytes_human(f.bytes), bytes_human(f.replayed_bytes), age(f.age_s) + " ago", state))
        lines += table(rows, right={1, 2, 3})
    lines += ["", *render_hooks(stats.hooks)]
    return "\n".join(lines)


def _step_lines(metrics: dict[str, dict[str, Any]]) -> list[str]:
    """Where each flusher's batches spend their time: its steps in batch order, seconds and share."""
    lines = []
    for consumer, m in sorted(metrics.items()):
        steps = m.get("step_seconds") or {}
        total = sum(v for v in steps.values() if isinstance(v, int | float))
        if not total:
            continue
        parts = [f"{name} {seconds:.1f} s ({seconds / total:.0%})" for name, seconds in steps.items()
                 if isinstance(seconds, int | float)]  # fmt: skip
        lines.append(f"  {consumer} batch steps: " + ", ".join(parts))
    return lines


def _redis_lines(stats: Stats) -> list[str]:
    """Memory against maxmemory, and persistence: what decides whether Redis keeps the events it holds."""
    r = stats.redis
    if r.maxmemory_bytes:
        share = r.used_memory_bytes / r.maxmemory_bytes
        memory = f"  memory {bytes_human(r.used_memory_bytes)} of {bytes_human(r.maxmemory_bytes)} ({share:.0%})"
        if share > _MEMORY_WARN:
            memory += ": near maxmemory, the edge will spool; is a flusher behind?"
    else:
        memory = f"  memory {bytes_human(r.used_memory_bytes)} (no maxmemory: the kernel's OOM killer is the limit)"
    memory += f", policy {r.maxmemory_policy or '?'}"
    if r.maxmemory_policy and r.maxmemory_policy != "noeviction":
        memory += " (it may evict stream entries: set noeviction)"
    streams = sum(s.memory_bytes or 0 for s in stats.streams)
    dead = bytes_human(stats.dead_letters.memory_bytes or 0)
    in_streams = (f"  in streams (sampled): events {bytes_human(streams)}, committed (action hooks) "
                  f"{bytes_human(r.committed_memory_bytes)}, dead letters {dead}")  # fmt: skip
    saved = f"last RDB save {age(r.last_save_age_s)} ago, {r.changes_since_last_save:,} changes since"
    if r.aof_enabled:
        persistence = f"  persistence: append-only on; {saved}"
    else:
        persistence = f"  persistence: append-only OFF (a restart loses what is not in Postgres); {saved}"
    if not r.persistence_ok:
        persistence += "; THE LAST AOF WRITE OR BACKGROUND SAVE FAILED"
    return [memory, in_streams, persistence]

"""The action hooks part of `tracker stats`: each hook's state, backlog, dead letters and last error.

Backlogs come from Redis (the hook's consumer groups on the committed streams,
its replay and dead-letter streams) and are shown even when Postgres is down.
Names, states (active, paused, failing) and the last error come from the
`hooks` table when DATABASE_URL is set; the query has a short timeout, so an
unreachable Postgres costs the view two seconds and a note, never the rest.

Backlogs count stream entries: each committed entry holds a batch of events
(at most TRACKER_HOOKS_ENTRY_MAX_EVENTS).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
from redis import Redis

from tracker.contract.keys import (
    committed_streams,
    forwarder_heartbeat_key,
    forwarders_set_key,
    hook_dead_letter_stream,
    hook_of_group,
    hook_replay_stream,
)
from tracker.ops.stats_format import age, as_bytes, num, table, text
from tracker.streams.unread import queue_unread, unread_of

_PG_TIMEOUT_S = 2.0
_ERROR_SHOWN = 60  # characters of the last error in the table; --json has all of it


class HookStats(msgspec.Struct):
    id: int
    name: str | None  # None: Postgres not read
    destination: str | None
    state: str | None  # active, paused, failing; None: Postgres not read, or Redis groups of a deleted hook
    backlog_entries: int | None  # pending + unread over its committed streams and replay stream (None: unknown)
    pending_entries: int
    oldest_waiting_age_s: float | None  # the oldest entry it has not acknowledged
    replay_entries: int | None
    dead_letter_entries: int
    consecutive_failures: int | None = None
    last_error: str | None = None
    last_error_age_s: float | None = None
    last_success_age_s: float | None = None
    delivered: int | None = None
    dead_lettered_events: int | None = None
    open_replays: int | None = None  # replay jobs queued or running


class HooksView(msgspec.Struct):
    hooks: list[HookStats]
    workers: list[str]  # hooks workers with a live heartbeat
    note: str | None  # why names and states are missing, when they are


@dataclass
class _Backlog:
    pending: int = 0
    unread: int | None = 0  # None: Redis cannot tell
    oldest_ms: float | None = None
    consumers: set[str] = field(default_factory=set)

    def add(self, pending: int, unread: int | None, oldest_ms: float | None) -> None:
        self.pending += pending
        self.unread = None if unread is None or self.unread is None else self.unread + unread
        if oldest_ms is not None:
            self.oldest_ms = oldest_ms if self.oldest_ms is None else min(self.oldest_ms, oldest_ms)

    def merge(self, other: _Backlog | None) -> _Backlog:
        if other is not None:
            self.add(other.pending, other.unread, other.oldest_ms)
            self.consumers |= other.consumers
        return self

    def age_s(self, now_ms: float) -> float | None:
        return None if self.oldest_ms is None else round(max(0.0, now_ms - self.oldest_ms) / 1000, 3)

    @property
    def entries(self) -> int | None:
        return None if self.unread is None else self.pending + self.unread


def collect_hooks(settings: Any, redis: Redis, now_ms: float) -> HooksView:
    """What every hook has waiting, from Redis; what it is and how it fares, from Postgres if it can."""
    prefix = settings.stream_prefix
    backlogs = _group_backlogs(redis, committed_streams(prefix, settings.stream_shards))
    rows, note = _hook_rows(settings.database_url)
    ids = sorted(backlogs.keys() | rows.keys())
    # Replay streams are read by the hook's group alone: count what that group has not acknowledged.
    replays = {hook_id: _group_backlogs(redis, [hook_replay_stream(prefix, hook_id)]).get(hook_id) for hook_id in ids}
    pipe = redis.pipeline(transaction=False)
    for hook_id in ids:
        pipe.xlen(hook_dead_letter_stream(prefix, hook_id))
    dead = pipe.execute(raise_on_error=False) if ids else []
    # Every hooks worker joins the workers set with each heartbeat, hooks or none; group members are
    # looked at too, for a worker that left the set (pruned at another's start) but still beats.
    members = {text(m) for m in redis.smembers(forwarders_set_key(prefix))}
    consumers = sorted(members | {c for b in [*backlogs.values(), *replays.values()] if b for c in b.consumers})
    pipe = redis.pipeline(transaction=False)
    for consumer in consumers:
        pipe.exists(forwarder_heartbeat_key(prefix, consumer))
    alive = [c for c, up in zip(consumers, pipe.execute() if consumers else [], strict=True) if up]

    now = time.time()
    hooks = []
    for n, hook_id in enumerate(ids):
        replay = _Backlog().merge(replays.get(hook_id))
        total = _Backlog().merge(backlogs.get(hook_id)).merge(replay)
        row = rows.get(hook_id, {})
        hooks.append(HookStats(
            id=hook_id,
            name=row.get("name"),
            destination=row.get("destination"),
            state=row.get("state") if row else (None if note else "deleted"),
            backlog_entries=total.entries,
            pending_entries=total.pending,
            oldest_waiting_age_s=total.age_s(now_ms),
            replay_entries=replay.entries,
            dead_letter_entries=dead[n] if isinstance(dead[n], int) else 0,
            consecutive_failures=row.get("consecutive_failures"),
            last_error=row.get("last_error"),
            last_error_age_s=_since(now, row.get("last_error_at")),
            last_success_age_s=_since(now, row.get("last_success_at")),
            delivered=row.get("delivered"),
            dead_lettered_events=row.get("dead_lettered"),
            open_replays=row.get("open_replays"),
        ))  # fmt: skip
    return HooksView(hooks=hooks, workers=alive, note=note)


def _group_backlogs(redis: Redis, streams: list[str]) -> dict[int, _Backlog]:
    """Per hook id: pending and unread entries of its groups on `streams`, and the oldest of them."""
    pipe = redis.pipeline(transaction=False)
    for stream in streams:
        pipe.xinfo_groups(stream)
    infos = pipe.execute(raise_on_error=False)
    found: list[tuple[str, int, dict]] = []
    pipe = redis.pipeline(transaction=False)
    for stream, groups in zip(streams, infos, strict=True):
        for group in groups if isinstance(groups, list) else []:  # an error: no such stream yet
            name, hook_id = text(group["name"]), hook_of_group(group["name"])
            if hook_id is None:
                continue
            found.append((stream, hook_id, group))
            pipe.xpending(stream, name)
            pipe.xinfo_consumers(stream, name)
            pipe.xrange(stream, min=b"(" + as_bytes(group["last-delivered-id"]), count=1)
            group["counted"] = queue_unread(pipe, stream, group)
    replies = iter(pipe.execute(raise_on_error=False) if found else [])
    backlogs: dict[int, _Backlog] = {}
    for _stream, hook_id, group in found:
        pending, consumers, unread = next(replies), next(replies), next(replies)
        lag = unread_of(group, next(replies) if group["counted"] else None)
        backlog = backlogs.setdefault(hook_id, _Backlog())
        oldest = pending.get("min") if isinstance(pending, dict) and group["pending"] else None
        if not oldest and isinstance(unread, list) and unread:
            oldest = unread[0][0]
        oldest_ms = float(text(oldest).split("-", 1)[0]) if oldest else None
        backlog.add(group["pending"], lag, oldest_ms)
        backlog.consumers |= {text(c["name"]) for c in consumers} if isinstance(consumers, list) else set()
    return backlogs


def _hook_rows(database_url: str) -> tuple[dict[int, dict[str, Any]], str | None]:
    if not database_url:
        return {}, "DATABASE_URL is not set: hook names, states and errors are not shown"
    try:
        # In a thread of its own: the caller may be running an event loop already (tests, embedding).
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, _fetch_rows(database_url)).result(), None
    except Exception as exc:  # unreachable, not migrated, or a malformed URL: the Redis side still shows
        return {}, f"Postgres unreachable or not migrated ({exc.__class__.__name__}: {exc}): states unknown"


async def _fetch_rows(database_url: str) -> dict[int, dict[str, Any]]:
    conn = await asyncpg.connect(database_url, timeout=_PG_TIMEOUT_S)
    try:
        rows = await conn.fetch(
            "select id, name, destination, state, consecutive_failures, last_error,"
            " extract(epoch from last_error_at)::float8 as last_error_at,"
            " extract(epoch from last_success_at)::float8 as last_success_at, delivered, dead_lettered,"
            " (select count(*) from hook_replays r where r.hook_id = h.id and r.status in ('queued', 'running'))"
            " as open_replays"
            " from hooks h order by id",
            timeout=_PG_TIMEOUT_S,
        )
    finally:
        await conn.close(timeout=_PG_TIMEOUT_S)
    return {row["id"]: dict(row) for row in rows}


def _since(now: float, at: float | None) -> float | None:
    return None if at is None else round(max(0.0, now - at), 3)


def render_hooks(view: HooksView) -> list[str]:
    workers = ", ".join(view.workers) if view.workers else "none alive"
    lines = [f"Action hooks (workers: {workers})"]
    if view.note:
        lines.append(f"  {view.note}")
    if not view.hooks:
        lines.append("  no hooks")
        return lines
    rows = [("id", "name", "type", "state", "backlog", "oldest", "replay", "jobs", "dead", "failures", "delivered",
             "last success", "last error")]  # fmt: skip
    for h in view.hooks:
        error = "-"
        if h.last_error:
            shown = h.last_error if len(h.last_error) <= _ERROR_SHOWN else h.last_error[: _ERROR_SHOWN - 3] + "..."
            error = f"{age(h.last_error_age_s)} ago: {shown}"
        rows.append((str(h.id), h.name or "?", h.destination or "?", h.state or "?",
                     "?" if h.backlog_entries is None else f"{h.backlog_entries:,}", age(h.oldest_waiting_age_s),
                     num(h.replay_entries), num(h.open_replays), f"{h.dead_letter_entries:,}",
                     num(h.consecutive_failures),
                     num(h.delivered), age(h.last_success_age_s) + (" ago" if h.last_success_age_s is not None else ""),
                     error))  # fmt: skip
    lines += table(rows, right={0, 4, 5, 6, 7, 8, 9, 10, 11})
    waiting = [h for h in view.hooks if h.state in ("paused", "failing") and h.backlog_entries]
    if waiting:
        lines.append("  paused and failing hooks keep their backlog; resume one with POST /api/v1/hooks/{id}/resume")
    lines.append("  backlog, replay and dead count stream entries; jobs: replay jobs queued or running")
    return lines

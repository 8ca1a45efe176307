"""Redis itself in the edge's `GET /metrics`: memory, persistence, clients, the streams and who is alive.

Operators look at Redis first: it holds every event not yet in Postgres. What
is read, in one pipelined round trip: one INFO (memory against `maxmemory`,
persistence, clients), and for each event, committed and dead-letter stream
its length, `MEMORY USAGE` (with a fixed SAMPLES count, so its cost does not
grow with the stream) and its groups' lag (counted by a script before Redis 7)
and pending entries; then the live
heartbeats of the flushers (members of the flushers' groups) and of the hooks
workers (the workers set), so an alert can fire when none is alive.

Scrapes are cheap: the text is cached for CACHE_S per edge worker and
concurrent scrapes share one read, so Redis sees at most one INFO per worker
every CACHE_S whatever the scrape rate. Everything is bounded by one second:
a slow Redis costs `tracker_redis_up 0`, not the scrape.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from edge.prom_text import sample
from tracker.contract.keys import (
    CONSUMER_GROUP,
    committed_streams,
    dead_letter_stream,
    event_streams,
    flusher_heartbeat_key,
    forwarder_heartbeat_key,
    forwarders_set_key,
    hooks_count_key,
)
from tracker.streams.cluster import fullest, is_cluster, on_masters
from tracker.streams.unread import queue_unread, unread_of

CACHE_S = 5.0
_TIMEOUT_S = 1.0
_MEMORY_SAMPLES = 5  # MEMORY USAGE looks at this many stream nodes and extrapolates


class RedisFacts:
    """The Redis part of /metrics for one edge worker, read at most once per CACHE_S."""

    def __init__(self, redis: Any, prefix: str, shards: int, cache_s: float = CACHE_S) -> None:
        self.redis, self.prefix, self.cache_s = redis, prefix, cache_s
        streams = [("events", s) for s in event_streams(prefix, shards)]
        streams += [("committed", s) for s in committed_streams(prefix, shards)]
        self.streams = [*streams, ("dead", dead_letter_stream(prefix))]
        self._text = ""
        self._read_at = float("-inf")  # monotonic
        self._lock = asyncio.Lock()

    async def text(self) -> str:
        async with self._lock:  # a scrape arriving during a read waits for it instead of reading again
            if time.monotonic() - self._read_at >= self.cache_s:
                self._text = await self._read()
                self._read_at = time.monotonic()
            age = _sample("tracker_redis_facts_age_seconds", {}, time.monotonic() - self._read_at)
            return self._text + _AGE_HELP + age + "\n"

    async def _read(self) -> str:
        try:
            async with asyncio.timeout(_TIMEOUT_S):
                info = await self._info()
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.get(hooks_count_key(self.prefix))
                    pipe.smembers(forwarders_set_key(self.prefix))
                    for _kind, stream in self.streams:
                        pipe.xlen(stream)
                        pipe.memory_usage(stream, samples=_MEMORY_SAMPLES)
                        pipe.xinfo_groups(stream)
                    replies = await pipe.execute(raise_on_error=False)
                hooks, forwarders = replies[:2]
                per_stream = [replies[2 + 3 * n : 5 + 3 * n] for n in range(len(self.streams))]
                alive = await self._alive(per_stream, forwarders)
                await self._count_unread(per_stream)
        except (RedisError, OSError, TimeoutError, RedisClusterException) as exc:
            down = _sample("tracker_redis_up", {}, 0)
            return f"{_UP_HELP}{down}\n# redis facts unavailable: {type(exc).__name__}\n"
        return render_redis_facts(info, self.streams, per_stream, alive, _int(hooks))

    async def _info(self) -> dict[str, Any]:
        """INFO of the one Redis; on a cluster, of the master closest to its maxmemory (what fills first)."""
        if not is_cluster(self.redis):
            return await self.redis.info()
        replies = await on_masters(self.redis, "INFO")
        infos = [reply for reply in replies.values() if isinstance(reply, dict)]
        if not infos:
            raise RedisError(f"no master answered INFO: {list(replies.values())[:1]}")
        return fullest(infos)

    async def _count_unread(self, per_stream: list[list[Any]]) -> None:
        """Before Redis 7 a group has no `lag`: count it (tracker.streams.unread) and put it in the group's reply."""
        async with self.redis.pipeline(transaction=False) as pipe:
            asked = [group for (_kind, stream), (_length, _memory, groups) in zip(self.streams, per_stream, strict=True)
                     for group in (groups if isinstance(groups, list) else []) if queue_unread(pipe, stream, group)]
            counts = await pipe.execute(raise_on_error=False) if asked else []
        for group, counted in zip(asked, counts, strict=True):
            group["lag"] = unread_of(group, counted)

    async def _alive(self, per_stream: list[list[Any]], forwarders: Any) -> dict[str, int]:
        """Live heartbeats by program: flushers are the members of the flushers' groups, hooks workers the set's."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for (kind, stream), (_length, _memory, groups) in zip(self.streams, per_stream, strict=True):
                if kind == "events" and isinstance(groups, list) and any(_name(g) == CONSUMER_GROUP for g in groups):
                    pipe.xinfo_consumers(stream, CONSUMER_GROUP)
            consumers = await pipe.execute(raise_on_error=False)
        flushers = sorted({_name(c) for reply in consumers if isinstance(reply, list) for c in reply})
        workers = sorted(_text(n) for n in forwarders) if isinstance(forwarders, set) else []
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in flushers:
                pipe.exists(flusher_heartbeat_key(self.prefix, name))
            for name in workers:
                pipe.exists(forwarder_heartbeat_key(self.prefix, name))
            live = await pipe.execute() if flushers or workers else []
        return {"flusher": sum(live[: len(flushers)]), "forwarder": sum(live[len(flushers) :])}


_UP_HELP = "# HELP tracker_redis_up 1 when the edge could read Redis' facts\n# TYPE tracker_redis_up gauge\n"
_AGE_HELP = ("# HELP tracker_redis_facts_age_seconds Seconds since the Redis facts were read (cached)\n"
             "# TYPE tracker_redis_facts_age_seconds gauge\n")

# (INFO field, metric, help); all gauges.
_INFO_SERIES = (
    ("used_memory", "tracker_redis_used_memory_bytes", "Memory Redis has allocated"),
    ("maxmemory", "tracker_redis_maxmemory_bytes", "Redis maxmemory (0: no limit, the kernel's OOM killer is)"),
    ("aof_enabled", "tracker_redis_aof_enabled", "1 when the append-only file is on (it must be)"),
    ("rdb_last_save_time", "tracker_redis_last_save_timestamp_seconds", "Unix time of the last RDB save"),
    ("rdb_changes_since_last_save", "tracker_redis_changes_since_last_save", "Writes since the last RDB save"),
    ("connected_clients", "tracker_redis_connected_clients", "Client connections"),
)


def render_redis_facts(info: dict[str, Any], streams: list[tuple[str, str]], per_stream: list[list[Any]],
                       alive: dict[str, int], hooks: int | None) -> str:  # fmt: skip
    """Prometheus text from the INFO dict, each stream's (length, memory, groups) and the live heartbeats."""
    lines = [_UP_HELP + _sample("tracker_redis_up", {}, 1)]
    for field, name, help_text in _INFO_SERIES:
        if field in info:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", _sample(name, {}, _int(info[field]) or 0)]
    # Redis refuses AOF writes or failed its last background save: what it acknowledged may not survive a restart.
    persisted = info.get("aof_last_write_status", "ok") == "ok" and info.get("rdb_last_bgsave_status", "ok") == "ok"
    lines += ["# HELP tracker_redis_persistence_ok 0 when the last AOF write or background save failed",
              "# TYPE tracker_redis_persistence_ok gauge", _sample("tracker_redis_persistence_ok", {}, persisted),
              "# HELP tracker_redis_info Redis version and maxmemory policy (it must be noeviction)",
              "# TYPE tracker_redis_info gauge",
              _sample("tracker_redis_info", {"version": info.get("redis_version", ""),
                                            "maxmemory_policy": info.get("maxmemory_policy", "")}, 1)]  # fmt: skip
    entries, memory, lag, pending = [], [], [], []
    for (kind, stream), (length, used, groups) in zip(streams, per_stream, strict=True):
        labels = {"kind": kind, "stream": stream}
        if isinstance(length, int):
            entries.append(_sample("tracker_redis_stream_entries", labels, length))
        if isinstance(used, int):  # None: no such stream yet
            memory.append(_sample("tracker_redis_stream_memory_bytes", labels, used))
        for group in groups if isinstance(groups, list) else []:  # an error: no such stream yet
            group_labels = {**labels, "group": _name(group)}
            waiting = _int(group.get("pending")) or 0
            pending.append(_sample("tracker_redis_group_pending_entries", group_labels, waiting))
            if isinstance(group.get("lag"), int):  # Redis cannot tell after XDEL or a trim past the group
                lag.append(_sample("tracker_redis_group_lag_entries", group_labels, group["lag"]))
    for name, kind, help_text, values in (
        ("tracker_redis_stream_entries", "gauge", "Entries in a stream (XLEN)", entries),
        ("tracker_redis_stream_memory_bytes", "gauge", f"MEMORY USAGE of a stream (SAMPLES {_MEMORY_SAMPLES})", memory),
        ("tracker_redis_group_lag_entries", "gauge", "Entries not yet delivered to a consumer group", lag),
        ("tracker_redis_group_pending_entries", "gauge", "Entries delivered to a group and not acknowledged", pending),
        ("tracker_heartbeats_alive", "gauge", "Processes with a live heartbeat, by program",
         [_sample("tracker_heartbeats_alive", {"program": p}, n) for p, n in sorted(alive.items())]),
        ("tracker_hooks_defined", "gauge", "Action hooks defined (the forwarder has work while above 0)",
         [_sample("tracker_hooks_defined", {}, hooks or 0)]),
    ):  # fmt: skip
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *values]
    return "\n".join(lines) + "\n"


def _sample(name: str, labels: dict[str, object], value: float) -> str:
    # Without labels, no braces: `name 1`, as prometheus_client writes it.
    return sample(name, labels, value) if labels else f"{name} {float(value)}"


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _name(entry: dict[str, Any]) -> str:
    return _text(entry.get("name", b""))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None

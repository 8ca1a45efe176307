"""`tracker stats`: where the events are right now, for an operator during an incident.

One `collect` gathers, in a few pipelined round trips: each event stream
shard (length, its consumer groups with pending entries, the age of the
oldest pending and of the oldest unread entry, consumers with their pending
counts and idle times), the dead-letter stream, the flushers' heartbeats and
metrics snapshots, and Redis' own facts from one INFO (memory against
maxmemory and its policy, persistence and the last save, ops/s, clients)
with the sampled MEMORY USAGE of every event, committed and dead-letter
stream. The edge spool is read from this host's TRACKER_SPOOL_DIR only:
spools are local files, so other hosts' edges must be looked at there. Action hooks (tracker.ops.stats_hooks):
backlogs from Redis, states and last errors from Postgres when it answers.

Ages of stream entries are measured on Redis' clock (entry ids are its
milliseconds); ages of files and heartbeats on this host's clock.

Nothing here SCANs the keyspace (a production Redis holds millions of link
and short-code keys): the shards come from the settings, and the flushers
from the consumer group, whose members' heartbeat and metrics keys are read
(the hooks workers from the set each of them joins with its heartbeat).

Here: collecting, and the command. What is shown: tracker.ops.stats_model;
printing it: tracker.ops.stats_render; the spool files' format and locks:
tracker.contract.spool_format.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from redis import Redis
from redis.exceptions import RedisError

from tracker.config import Settings, redact_url
from tracker.contract.exits import EXIT_OK, EXIT_UNREACHABLE
from tracker.contract.keys import (
    committed_streams,
    dead_letter_stream,
    event_streams,
    flusher_heartbeat_key,
    flusher_metrics_key,
)
from tracker.contract.snapshots import FlusherHeartbeatFacts, decode
from tracker.contract.spool_format import SPOOL_GLOB, holder_of, holds_lock, lock_holders, read_offset
from tracker.ops.stats_format import (
    MEMORY_SAMPLES,
    as_bytes,
    entry_age_s,
    json_object,
    text,
)
from tracker.ops.stats_hooks import collect_hooks
from tracker.ops.stats_model import (
    ConsumerStats,
    DeadLetters,
    FlusherHeartbeat,
    GroupStats,
    RedisServer,
    SpoolDir,
    SpoolFile,
    Stats,
    StreamStats,
)
from tracker.ops.stats_render import render, to_json
from tracker.streams.unread import queue_unread, unread_of

_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen: the next frame replaces this one


def connect(settings: Settings) -> Redis:
    # Short timeouts: during an incident a hanging stats command is worse than an error.
    if settings.redis_cluster:
        from redis.cluster import ClusterNode, RedisCluster

        from tracker.streams.cluster import seed_urls

        first, *others = seed_urls(settings.redis_url)
        seeds = [ClusterNode(u.hostname or "127.0.0.1", u.port or 6379) for u in map(urlsplit, others)]
        return RedisCluster.from_url(first, startup_nodes=seeds or None, socket_timeout=3,  # type: ignore[return-value]
                                     socket_connect_timeout=2)  # fmt: skip
    return Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=2)


def _clock_and_info(redis: Redis) -> tuple[float, dict[str, Any]]:
    """Redis' clock (ms) and INFO; on a cluster, the INFO of the master closest to its maxmemory (the
    one that fills first), with `cluster_masters` added. Keyless commands do not go in a cluster pipeline."""
    from redis.cluster import RedisCluster

    from tracker.streams.cluster import fullest

    if not isinstance(redis, RedisCluster):
        pipe = redis.pipeline(transaction=False)
        pipe.time()
        pipe.info()  # one INFO: its default sections hold memory, persistence, stats, clients and server
        (seconds, micros), info = pipe.execute()
        return seconds * 1000 + micros / 1000, info
    infos = redis.info(target_nodes=RedisCluster.PRIMARIES)
    infos = infos if isinstance(infos, dict) and all(isinstance(v, dict) for v in infos.values()) else {"": infos}
    info = dict(fullest(infos.values()))
    info["cluster_masters"] = len(infos)
    seconds, micros = redis.time(target_nodes=RedisCluster.RANDOM)
    return seconds * 1000 + micros / 1000, info


def collect(settings: Settings, redis: Redis) -> Stats:
    prefix = settings.stream_prefix
    streams = event_streams(prefix, settings.stream_shards)
    dead = dead_letter_stream(prefix)

    committed = committed_streams(prefix, settings.stream_shards)

    now_ms, info = _clock_and_info(redis)
    pipe = redis.pipeline(transaction=False)
    pipe.xlen(dead)
    pipe.xrevrange(dead, count=1)
    pipe.memory_usage(dead, samples=MEMORY_SAMPLES)
    for stream in committed:
        pipe.memory_usage(stream, samples=MEMORY_SAMPLES)
    for stream in streams:
        pipe.xlen(stream)
        pipe.xinfo_groups(stream)
        pipe.memory_usage(stream, samples=MEMORY_SAMPLES)
    replies = pipe.execute(raise_on_error=False)
    for reply in replies[:2]:
        if isinstance(reply, Exception):
            raise reply
    dead_len, newest, dead_memory = replies[:3]
    committed_memory = replies[3 : 3 + len(committed)]
    per_stream = replies[3 + len(committed) :]

    groups_of: list[list[dict]] = []
    pipe = redis.pipeline(transaction=False)
    for index, stream in enumerate(streams):
        groups = per_stream[3 * index + 1]
        groups = groups if isinstance(groups, list) else []  # an error: the key is not a stream (yet)
        groups_of.append(groups)
        for group in groups:
            name = group["name"]
            pipe.xinfo_consumers(stream, name)
            pipe.xpending(stream, name)
            pipe.xrange(stream, min=b"(" + as_bytes(group["last-delivered-id"]), count=1)
            # Redis 7 says how far behind a group is ("lag"); before 7 a script counts it.
            group["counted"] = queue_unread(pipe, stream, group)
    group_replies = iter(pipe.execute(raise_on_error=False))

    stream_stats = []
    for index, stream in enumerate(streams):
        length, memory = per_stream[3 * index], per_stream[3 * index + 2]
        group_stats = []
        for group in groups_of[index]:
            consumers, pending, unread = next(group_replies), next(group_replies), next(group_replies)
            counted = next(group_replies) if group["counted"] else None
            oldest_pending = pending.get("min") if isinstance(pending, dict) else None
            first_unread = unread[0][0] if isinstance(unread, list) and unread else None
            group_stats.append(GroupStats(
                name=text(group["name"]),
                pending=group["pending"],
                oldest_pending_age_s=entry_age_s(now_ms, oldest_pending),
                unread=unread_of(group, counted),
                oldest_unread_age_s=entry_age_s(now_ms, first_unread),
                last_delivered_id=text(group["last-delivered-id"]),
                consumers=[
                    ConsumerStats(text(c["name"]), c["pending"], round(c["idle"] / 1000, 3))
                    for c in (consumers if isinstance(consumers, list) else [])
                ],
            ))  # fmt: skip
        stream_stats.append(StreamStats(stream, length if isinstance(length, int) else 0, group_stats,
                                        memory if isinstance(memory, int) else None))  # fmt: skip

    newest_age = newest_reason = None
    if newest:
        entry_id, fields = newest[0]
        newest_age = entry_age_s(now_ms, entry_id)
        newest_reason = text(fields.get(b"reason", b""))
    host_now = time.time()
    consumers = sorted({c.name for s in stream_stats for g in s.groups for c in g.consumers})
    return Stats(
        at=host_now,
        prefix=prefix,
        redis=_server(settings, info, now_ms, committed_memory),
        streams=stream_stats,
        dead_letters=DeadLetters(
            dead, dead_len, newest_age, newest_reason, dead_memory if isinstance(dead_memory, int) else None
        ),
        flushers=_heartbeats(redis, prefix, consumers, host_now),
        flusher_metrics=_metrics_snapshots(redis, prefix, consumers),
        spool=spool_files(settings.edge.spool_dir, host_now),
        hooks=collect_hooks(settings, redis, now_ms),
    )


def _server(settings: Settings, info: dict[str, Any], now_ms: float, committed_memory: list[Any]) -> RedisServer:
    last_save = info.get("rdb_last_save_time")
    statuses = (info.get("aof_last_write_status", "ok"), info.get("rdb_last_bgsave_status", "ok"))
    return RedisServer(
        url=redact_url(settings.redis_url),
        version=str(info.get("redis_version", "")),
        used_memory_bytes=int(info.get("used_memory", 0)),
        used_memory_human=str(info.get("used_memory_human", "")),
        maxmemory_bytes=int(info.get("maxmemory", 0)),
        ops_per_sec=int(info.get("instantaneous_ops_per_sec", 0)),
        connected_clients=int(info.get("connected_clients", 0)),
        maxmemory_policy=str(info.get("maxmemory_policy", "")),
        aof_enabled=bool(int(info.get("aof_enabled", 0))),
        last_save_age_s=round(max(0.0, now_ms / 1000 - int(last_save)), 3) if last_save else None,
        changes_since_last_save=int(info.get("rdb_changes_since_last_save", 0)),
        # An AOF write Redis could not make, or a failed background save: acknowledged writes may not survive.
        persistence_ok=statuses == ("ok", "ok"),
        committed_memory_bytes=sum(m for m in committed_memory if isinstance(m, int)),
    )


def _heartbeats(redis: Redis, prefix: str, consumers: list[str], now: float) -> list[FlusherHeartbeat]:
    if not consumers:
        return []
    pipe = redis.pipeline(transaction=False)
    for consumer in consumers:
        pipe.get(flusher_heartbeat_key(prefix, consumer))
        pipe.pttl(flusher_heartbeat_key(prefix, consumer))
    replies = pipe.execute()
    beats = []
    for consumer, raw, ttl_ms in zip(consumers, replies[::2], replies[1::2], strict=True):
        if raw is None:
            continue  # a consumer the group remembers, whose process is gone
        facts = decode(raw, FlusherHeartbeatFacts) or FlusherHeartbeatFacts()
        beats.append(FlusherHeartbeat(
            consumer=consumer,
            pid=facts.pid,
            age_s=round(now - facts.at, 3) if facts.at is not None else None,
            expires_in_s=ttl_ms / 1000 if ttl_ms >= 0 else None,
        ))  # fmt: skip
    return beats


def _metrics_snapshots(redis: Redis, prefix: str, consumers: list[str]) -> list[dict[str, Any]]:
    if not consumers:
        return []
    raws = redis.mget([flusher_metrics_key(prefix, consumer) for consumer in consumers])
    return [snapshot for raw in raws if raw is not None and (snapshot := json_object(raw))]


# -- the spool, on this host ------------------------------------------------------------


def spool_files(directory: Path, now: float) -> SpoolDir:
    directory = Path(directory).absolute()
    host = socket.gethostname()
    if not directory.is_dir():
        return SpoolDir(host, str(directory), False, [])
    holders = lock_holders()  # read, not probed: looking must not make an edge worker's own lock fail
    files = []
    for path in sorted(directory.glob(SPOOL_GLOB)):
        try:
            info = path.stat()
        except FileNotFoundError:
            continue  # replayed and removed just now
        if holders is None:
            holder, locked = None, bool(holds_lock(path))
        else:
            holder = holder_of(info, holders)
            locked = holder is not None
        files.append(SpoolFile(
            name=path.name,
            bytes=info.st_size,
            replayed_bytes=_replayed(path),
            age_s=round(max(0.0, now - info.st_mtime), 3),
            locked=locked,
            holder_pid=holder,
        ))  # fmt: skip
    return SpoolDir(host, str(directory), True, files)


def _replayed(path: Path) -> int:
    try:
        return read_offset(path)
    except OSError:  # an unreadable offset file: shown as nothing replayed
        return 0


# -- the command ------------------------------------------------------------------------


def run(settings: Settings, *, watch_s: float | None = None, as_json: bool = False,
        out: TextIO | None = None, err: TextIO | None = None) -> int:  # fmt: skip
    """Print the stats once (exit 0, or 1 when Redis is unreachable), or every `watch_s` until Ctrl-C (exit 0)."""
    settings.require("redis_url")
    out, err = out or sys.stdout, err or sys.stderr  # looked up now: tests and callers may have replaced them
    redis = connect(settings)
    try:
        if watch_s is None:
            return _once(settings, redis, as_json, out, err)
        try:
            while True:
                frame = _frame(settings, redis, as_json)
                # JSON lines for a script; a whole screen redrawn in place for a person.
                out.write(frame + "\n" if as_json else _CLEAR + frame + f"\n\nevery {watch_s:g}s; Ctrl-C exits\n")
                out.flush()
                time.sleep(watch_s)
        except KeyboardInterrupt:
            return EXIT_OK
    finally:
        redis.close()


def _once(settings: Settings, redis: Redis, as_json: bool, out: TextIO, err: TextIO) -> int:
    try:
        stats = collect(settings, redis)
    except (RedisError, OSError) as exc:
        print(f"tracker stats: Redis unreachable at {redact_url(settings.redis_url)}: {exc}", file=err)
        return EXIT_UNREACHABLE
    print(to_json(stats) if as_json else render(stats), file=out)
    return EXIT_OK


def _frame(settings: Settings, redis: Redis, as_json: bool) -> str:
    try:
        stats = collect(settings, redis)
    except (RedisError, OSError) as exc:
        # While watching, an outage is a state to show and keep watching, not a reason to quit.
        message = f"Redis unreachable at {redact_url(settings.redis_url)}: {exc}"
        return json.dumps({"at": time.time(), "error": message}) if as_json else f"tracker stats: {message}"
    return to_json(stats) if as_json else render(stats)

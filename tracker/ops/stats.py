"""`tracker stats`: where the events are right now, for an operator during an incident.

One `collect` gathers, in a few pipelined round trips: each event stream
shard (length, its consumer groups with pending entries, the age of the
oldest pending and of the oldest unread entry, consumers with their pending
counts and idle times), the dead-letter stream, the flushers' heartbeats and
metrics snapshots, and Redis' own memory, ops/s and clients. The edge spool
is read from this host's TRACKER_SPOOL_DIR only: spools are local files, so
other hosts' edges must be looked at there. Action hooks (tracker.ops.stats_hooks):
backlogs from Redis, states and last errors from Postgres when it answers.

Ages of stream entries are measured on Redis' clock (entry ids are its
milliseconds); ages of files and heartbeats on this host's clock.

Nothing here SCANs the keyspace (a production Redis holds millions of link
and short-code keys): the shards come from the settings, and the flushers
from the consumer group, whose members' heartbeat and metrics keys are read.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import msgspec
from redis import Redis
from redis.exceptions import RedisError

from tracker.config import Settings, redact_url
from tracker.contract.keys import dead_letter_stream, event_streams, flusher_heartbeat_key, flusher_metrics_key
from tracker.ops.stats_format import (
    COUNT_UNREAD_UP_TO,
    age,
    as_bytes,
    bytes_human,
    counted_unread,
    entry_age_s,
    json_object,
    num,
    table,
    text,
)
from tracker.ops.stats_hooks import HooksView, collect_hooks, render_hooks

EXIT_OK, EXIT_UNREACHABLE = 0, 1
_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen: the next frame replaces this one


class ConsumerStats(msgspec.Struct):
    name: str
    pending: int
    idle_s: float


class GroupStats(msgspec.Struct):
    name: str
    pending: int
    oldest_pending_age_s: float | None
    unread: int | None  # entries not yet delivered to the group (None: Redis cannot tell, e.g. after XDEL)
    oldest_unread_age_s: float | None
    last_delivered_id: str
    consumers: list[ConsumerStats]


class StreamStats(msgspec.Struct):
    stream: str
    length: int
    groups: list[GroupStats]


class DeadLetters(msgspec.Struct):
    stream: str
    length: int
    newest_age_s: float | None
    newest_reason: str | None


class FlusherHeartbeat(msgspec.Struct):
    consumer: str
    pid: int | None
    age_s: float | None
    expires_in_s: float | None


class SpoolFile(msgspec.Struct):
    name: str
    bytes: int
    replayed_bytes: int
    age_s: float  # since the last write
    locked: bool  # a live edge worker holds it: its writer, or a worker replaying it
    holder_pid: int | None


class SpoolDir(msgspec.Struct):
    host: str
    directory: str
    exists: bool
    files: list[SpoolFile]
    note: str = "local: this host's TRACKER_SPOOL_DIR only; edges on other hosts spool to their own disks"


class RedisServer(msgspec.Struct):
    url: str
    version: str
    used_memory_bytes: int
    used_memory_human: str
    maxmemory_bytes: int
    ops_per_sec: int
    connected_clients: int


class Stats(msgspec.Struct):
    at: float
    prefix: str
    redis: RedisServer
    streams: list[StreamStats]
    dead_letters: DeadLetters
    flushers: list[FlusherHeartbeat]
    flusher_metrics: list[dict[str, Any]]
    spool: SpoolDir
    hooks: HooksView


def connect(settings: Settings) -> Redis:
    # Short timeouts: during an incident a hanging stats command is worse than an error.
    return Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=2)


def collect(settings: Settings, redis: Redis) -> Stats:
    prefix = settings.stream_prefix
    streams = event_streams(prefix, settings.stream_shards)
    dead = dead_letter_stream(prefix)

    pipe = redis.pipeline(transaction=False)
    pipe.time()
    pipe.info("memory")
    pipe.info("stats")
    pipe.info("clients")
    pipe.info("server")
    pipe.xlen(dead)
    pipe.xrevrange(dead, count=1)
    for stream in streams:
        pipe.xlen(stream)
        pipe.xinfo_groups(stream)
    replies = pipe.execute(raise_on_error=False)
    for reply in replies[:7]:
        if isinstance(reply, Exception):
            raise reply
    (seconds, micros), memory, stats, clients, server, dead_len, newest = replies[:7]
    now_ms = seconds * 1000 + micros / 1000
    per_stream = replies[7:]

    groups_of: list[list[dict]] = []
    pipe = redis.pipeline(transaction=False)
    for index, stream in enumerate(streams):
        groups = per_stream[2 * index + 1]
        groups = groups if isinstance(groups, list) else []  # an error: the key is not a stream (yet)
        groups_of.append(groups)
        for group in groups:
            name = group["name"]
            pipe.xinfo_consumers(stream, name)
            pipe.xpending(stream, name)
            # Redis 7 says how far behind a group is ("lag"); before 7 the unread entries are counted, up to a cap.
            count = 1 if "lag" in group else COUNT_UNREAD_UP_TO + 1
            pipe.xrange(stream, min=b"(" + as_bytes(group["last-delivered-id"]), count=count)
    group_replies = iter(pipe.execute(raise_on_error=False))

    stream_stats = []
    for index, stream in enumerate(streams):
        length = per_stream[2 * index]
        group_stats = []
        for group in groups_of[index]:
            consumers, pending, unread = next(group_replies), next(group_replies), next(group_replies)
            oldest_pending = pending.get("min") if isinstance(pending, dict) else None
            first_unread = unread[0][0] if isinstance(unread, list) and unread else None
            group_stats.append(GroupStats(
                name=text(group["name"]),
                pending=group["pending"],
                oldest_pending_age_s=entry_age_s(now_ms, oldest_pending),
                unread=group["lag"] if "lag" in group else counted_unread(unread),
                oldest_unread_age_s=entry_age_s(now_ms, first_unread),
                last_delivered_id=text(group["last-delivered-id"]),
                consumers=[
                    ConsumerStats(text(c["name"]), c["pending"], round(c["idle"] / 1000, 3))
                    for c in (consumers if isinstance(consumers, list) else [])
                ],
            ))  # fmt: skip
        stream_stats.append(StreamStats(stream, length if isinstance(length, int) else 0, group_stats))

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
        redis=RedisServer(
            url=redact_url(settings.redis_url),
            version=str(server.get("redis_version", "")),
            used_memory_bytes=int(memory.get("used_memory", 0)),
            used_memory_human=str(memory.get("used_memory_human", "")),
            maxmemory_bytes=int(memory.get("maxmemory", 0)),
            ops_per_sec=int(stats.get("instantaneous_ops_per_sec", 0)),
            connected_clients=int(clients.get("connected_clients", 0)),
        ),
        streams=stream_stats,
        dead_letters=DeadLetters(dead, dead_len, newest_age, newest_reason),
        flushers=_heartbeats(redis, prefix, consumers, host_now),
        flusher_metrics=_metrics_snapshots(redis, prefix, consumers),
        spool=spool_files(settings.edge.spool_dir, host_now),
        hooks=collect_hooks(settings, redis, now_ms),
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
        facts = json_object(raw)
        at = facts.get("at")
        beats.append(FlusherHeartbeat(
            consumer=consumer,
            pid=facts.get("pid"),
            age_s=round(now - at, 3) if isinstance(at, int | float) else None,
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
    holders = _flock_holders()
    files = []
    for path in sorted(directory.glob("edge-*.spool")):
        try:
            info = path.stat()
        except FileNotFoundError:
            continue  # replayed and removed just now
        if holders is None:
            holder, locked = None, _probe_locked(path)
        else:
            holder = holders.get((os.major(info.st_dev), os.minor(info.st_dev), info.st_ino))
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


def _flock_holders() -> dict[tuple[int, int, int], int] | None:
    """{(major, minor, inode): pid} of flock() locks on this host, from /proc/locks (None off Linux).

    Read instead of probing with flock() ourselves: a probe would hold the lock
    for an instant and could make an edge worker's own non-blocking lock fail.
    """
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    holders = {}
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:5341503 0 EOF"; waiters have "->" after the number.
        if len(parts) < 6 or parts[1] != "FLOCK":
            continue
        major, minor, inode = parts[5].split(":")
        holders[(int(major, 16), int(minor, 16), int(inode))] = int(parts[4])
    return holders


def _probe_locked(path: Path) -> bool:
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _replayed(path: Path) -> int:
    # The edge keeps replay progress in `<name>.offset` beside the spool file (edge.spool.offset_path).
    try:
        return int(path.with_suffix(".offset").read_text() or 0)
    except (OSError, ValueError):
        return 0


# -- output -----------------------------------------------------------------------------


def to_json(stats: Stats) -> str:
    return msgspec.json.encode(stats).decode()


def render(stats: Stats) -> str:
    r = stats.redis
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stats.at))
    limit = f" of {bytes_human(r.maxmemory_bytes)}" if r.maxmemory_bytes else " (no maxmemory)"
    lines = [
        f"tracker stats  {when}  prefix {stats.prefix!r}",
        f"Redis {r.version} at {r.url}: memory {r.used_memory_human}{limit}, {r.ops_per_sec:,} ops/s, "
        f"{r.connected_clients} clients",
        "",
        "Event streams",
    ]
    rows = [("stream", "length", "group", "pending", "oldest pending", "unread", "oldest unread", "last delivered")]
    consumer_lines = []
    for s in stats.streams:
        if not s.groups:
            rows.append((s.stream, f"{s.length:,}", "(no group)", "-", "-", "-", "-", "-"))
        for g in s.groups:
            unread = "?" if g.unread is None else f"{g.unread:,}"
            rows.append((s.stream, f"{s.length:,}", g.name, f"{g.pending:,}", age(g.oldest_pending_age_s), unread,
                         age(g.oldest_unread_age_s), g.last_delivered_id))  # fmt: skip
            for c in g.consumers:
                consumer_lines.append((s.stream, g.name, c.name, f"{c.pending:,}", age(c.idle_s)))
    lines += table(rows, right={1, 3, 4, 5, 6})
    lines += ["", "Consumers"]
    if consumer_lines:
        lines += table([("stream", "group", "consumer", "pending", "idle"), *consumer_lines], right={3, 4})
    else:
        lines.append("  none registered")
    d = stats.dead_letters
    newest = f", newest {age(d.newest_age_s)} ago: {d.newest_reason}" if d.length and d.newest_reason else ""
    lines += ["", f"Dead letters: {d.length:,} in {d.stream}{newest}", "", "Flushers"]
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

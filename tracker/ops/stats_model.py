"""What `tracker stats` shows (tracker.ops.stats collects it, tracker.ops.stats_render prints it)."""

from __future__ import annotations

from typing import Any

import msgspec

from tracker.ops.stats_hooks import HooksView


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
    memory_bytes: int | None = None  # MEMORY USAGE (sampled); None: no such stream


class DeadLetters(msgspec.Struct):
    stream: str
    length: int
    newest_age_s: float | None
    newest_reason: str | None
    memory_bytes: int | None = None


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
    maxmemory_policy: str = ""
    aof_enabled: bool = False
    last_save_age_s: float | None = None  # the last RDB save, on Redis' clock
    changes_since_last_save: int = 0
    persistence_ok: bool = True  # False: the last AOF write or background save failed
    committed_memory_bytes: int = 0  # MEMORY USAGE of the committed streams (action hooks' input), summed


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

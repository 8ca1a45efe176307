"""Redis key and stream names, in one place for the edge, the flusher and ops tools.

Each stream shard has its own hash tag, so Redis Cluster can put shards on
different nodes while every multi-key command stays within one shard: the
event stream `{N}` and the committed stream of the same shard share it, and
with it the consumer groups on them (the flusher's and every action hook's).

Keys read together in one command besides those share a tag too: each
program's heartbeats, metrics snapshots and list of workers (`{flusher}`,
`{hooks}`), which /metrics and `tracker stats` MGET in one round trip. They
all expire within a minute (the list of workers is pruned at each start), so
the rename costs a rolling upgrade a heartbeat's worth of metrics, no data.

Keys left without a tag are read and written one at a time (dead letters,
link tables, short codes, replay streams, the hooks' count and version): on
a cluster they spread over every master.
"""

from __future__ import annotations

ENTRY_FIELD = b"e"  # stream entry field: a msgpack array of Events (tracker.contract.events.encode_batch)
CONSUMER_GROUP = "flushers"


def event_stream(prefix: str, shard: int) -> str:
    return f"{prefix}:events:{{{shard}}}"


def event_streams(prefix: str, shards: int) -> list[str]:
    return [event_stream(prefix, shard) for shard in range(shards)]


def shard_for(profile_id: int, shards: int) -> int:
    # By profile, so one profile's events stay in order within one stream.
    return profile_id % shards


def dead_letter_stream(prefix: str) -> str:
    return f"{prefix}:dead"


def link_table_key(prefix: str, message_id: int, version: int) -> str:
    return f"{prefix}:links:{message_id}:{version}"


def short_link_key(prefix: str, code: str) -> str:
    """The Redis copy of an SMS short code (tracker.domain.short_links.ShortLink, msgpack)."""
    return f"{prefix}:short:{code}"


def flusher_heartbeat_key(prefix: str, consumer: str) -> str:
    return f"{prefix}:{{flusher}}:alive:{consumer}"


def flusher_metrics_key(prefix: str, consumer: str) -> str:
    """A JSON snapshot of one flusher's metrics (with a TTL), served by the edge's /metrics."""
    return f"{prefix}:{{flusher}}:metrics:{consumer}"


# -- action hooks: the committed streams, each hook's group and streams, the forwarder's keys


def committed_stream(prefix: str, shard: int) -> str:
    # Same hash tag as the event stream of the shard: Redis Cluster keeps them together.
    return f"{prefix}:committed:{{{shard}}}"


def committed_streams(prefix: str, shards: int) -> list[str]:
    return [committed_stream(prefix, shard) for shard in range(shards)]


def hook_group(hook_id: int) -> str:
    return f"hook:{hook_id}"


def hook_of_group(name: bytes | str) -> int | None:
    """The hook id of a consumer group named by `hook_group`; None for any other group."""
    text = name.decode(errors="replace") if isinstance(name, bytes) else name
    head, _, tail = text.partition(":")
    return int(tail) if head == "hook" and tail.isascii() and tail.isdigit() else None


def hook_replay_stream(prefix: str, hook_id: int) -> str:
    """Events re-sent to one hook only: replays from Postgres and re-queued dead letters."""
    return f"{prefix}:hooks:{hook_id}:replay"


def hook_dead_letter_stream(prefix: str, hook_id: int) -> str:
    return f"{prefix}:hooks:{hook_id}:dead"


def hooks_count_key(prefix: str) -> str:
    """How many hooks exist; the flusher forwards committed events only while it is above 0."""
    return f"{prefix}:hooks:count"


def hooks_version_key(prefix: str) -> str:
    """Incremented on every change of a definition, so that the worker reloads at once."""
    return f"{prefix}:hooks:version"


def hook_test_requests_key(prefix: str) -> str:
    return f"{prefix}:hooks:tests"


def hook_test_reply_key(prefix: str, request_id: str) -> str:
    return f"{prefix}:hooks:test:{request_id}"


def forwarder_heartbeat_key(prefix: str, consumer: str) -> str:
    return f"{prefix}:{{hooks}}:alive:{consumer}"


def forwarder_metrics_key(prefix: str, consumer: str) -> str:
    """A hooks worker's counts per hook (JSON), refreshed with its heartbeat, for the edge's /metrics."""
    return f"{prefix}:{{hooks}}:metrics:{consumer}"


def forwarders_set_key(prefix: str) -> str:
    """Names of hooks workers that have run; those whose heartbeat expired are pruned at a worker's start."""
    return f"{prefix}:{{hooks}}:workers"

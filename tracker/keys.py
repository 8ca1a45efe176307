"""Redis key and stream names, in one place for the edge, the flusher and ops tools.

Each stream shard has its own hash tag, so Redis Cluster can put shards on
different nodes while every multi-key command stays within one shard.
"""

from __future__ import annotations

ENTRY_FIELD = b"e"  # stream entry field: a msgpack array of Events (tracker.events.encode_batch)
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
    """The Redis copy of an SMS short code (tracker.short_links.ShortLink, msgpack)."""
    return f"{prefix}:short:{code}"


def flusher_heartbeat_key(prefix: str, consumer: str) -> str:
    return f"{prefix}:flusher:alive:{consumer}"


def flusher_metrics_key(prefix: str, consumer: str) -> str:
    """A JSON snapshot of one flusher's metrics (with a TTL), served by the edge's /metrics."""
    return f"{prefix}:flusher:metrics:{consumer}"

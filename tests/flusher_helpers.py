"""Helpers for the flusher tests: events pushed the way the edge writes them, data to act on, runs."""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

import asyncpg
from redis.asyncio import Redis

from flusher.worker import Flusher
from tracker.events import Event, EventIds, encode_batch, encode_event
from tracker.keys import ENTRY_FIELD, event_stream, shard_for
from tracker.link_tables import Link, create_message
from tracker.settings import Settings

_ids = EventIds()
_emails = itertools.count()
_tag = os.urandom(3).hex()


def now_us() -> int:
    return time.time_ns() // 1000


def event(message_id: int, profile_id: int, kind: str = "opened", *, ts_us: int | None = None,
          channel: str = "email", link_index: int = -1, link_version: int = 1,
          data: dict[str, Any] | None = None) -> Event:  # fmt: skip
    ts_us = now_us() if ts_us is None else ts_us
    return Event(_ids.new(ts_us // 1000), kind, channel, message_id, profile_id, ts_us, link_version,
                 link_index, "desktop", "203.0.113.0/24", data)  # fmt: skip


async def push(redis: Redis, settings: Settings, events: Iterable[Event], per_entry: int = 100) -> int:
    """XADD the events as the edge does: per shard, `per_entry` events to an entry."""
    by_shard: dict[int, list[bytes]] = {}
    for e in events:
        by_shard.setdefault(shard_for(e.profile_id, settings.stream_shards), []).append(encode_event(e))
    pushed = 0
    pipe = redis.pipeline(transaction=False)
    for shard, payloads in by_shard.items():
        stream = event_stream(settings.stream_prefix, shard)
        for start in range(0, len(payloads), per_entry):
            pipe.xadd(stream, {ENTRY_FIELD: encode_batch(payloads[start : start + per_entry])})
            pushed += 1
            if pushed % 200 == 0:
                await pipe.execute()
    await pipe.execute()
    return sum(len(p) for p in by_shard.values())


async def push_raw(redis: Redis, settings: Settings, fields: dict, shard: int = 0) -> bytes:
    return await redis.xadd(event_stream(settings.stream_prefix, shard), fields)


async def make_profiles(pg: asyncpg.Connection, count: int, **columns: Any) -> list[int]:
    rows = []
    for _ in range(count):
        n = next(_emails)
        rows.append(await pg.fetchval(
            "insert into profiles (email, phone) values ($1, $2) returning id",
            f"p{_tag}-{n}@example.com", f"+1555{_tag}{n:06d}",
        ))  # fmt: skip
    if columns:
        sets = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(columns))
        await pg.execute(f"update profiles set {sets} where id = any($1)", rows, *columns.values())
    return rows


async def make_resource(pg: asyncpg.Connection, channel: str = "email") -> int:
    return await pg.fetchval("insert into resources (name, channel) values ('list', $1) returning id", channel)


async def make_message(pg: asyncpg.Connection, channel: str = "email", links: list[Link] | None = None,
                       resource_id: int | None = None) -> int:  # fmt: skip
    message_id, _version = await create_message(
        pg, channel, "test", links if links is not None else [Link("https://example.com/")], resource_id
    )
    return message_id


async def ensure_field(pg: asyncpg.Connection, name: str, type_: str, enum_values: list[str] | None = None) -> None:
    await pg.execute(
        "insert into profile_fields (name, type, enum_values) values ($1, $2, $3) on conflict (name) do nothing",
        name, type_, enum_values,
    )  # fmt: skip


def flusher_settings(settings: Settings, **changes: Any) -> Settings:
    quick = {"flusher_retry_min_s": 0.05, "flusher_retry_max_s": 0.5, "flusher_batch_max_age_ms": 20.0}
    return settings.replace(**{**quick, **changes})


async def drain(settings: Settings, **changes: Any) -> Flusher:
    """Run one flusher in burst mode (in this process) until the streams are drained."""
    flusher = Flusher(flusher_settings(settings, **changes), burst=True)
    await flusher.run()
    return flusher


def flusher_env(settings: Settings, **variables: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FLUSHER_", "TRACKER_"))}
    env.update(
        REDIS_URL=settings.redis_url,
        DATABASE_URL=settings.database_url,
        TRACKER_STREAM_PREFIX=settings.stream_prefix,
        TRACKER_STREAM_SHARDS=str(settings.stream_shards),
        FLUSHER_RETRY_MIN_S="0.05",
        FLUSHER_RETRY_MAX_S="0.5",
        FLUSHER_MIGRATE="false",
    )
    env.update(variables)
    return env


FLUSHER_COMMAND = [sys.executable, "-m", "flusher.cli"]


async def counters(pg: asyncpg.Connection, message_id: int) -> dict[str, tuple[int, int]]:
    rows = await pg.fetch("select kind, total, uniques from message_counters where message_id = $1", message_id)
    return {row["kind"]: (row["total"], row["uniques"]) for row in rows}


async def stored_ids(pg: asyncpg.Connection, message_ids: list[int]) -> list[bytes]:
    rows = await pg.fetch("select id from events where message_id = any($1)", message_ids)
    return [row["id"].bytes for row in rows]

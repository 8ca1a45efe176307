"""The hooks worker stops nothing silently: its heartbeat follows progress, a full Redis is drained."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from forwarder.worker import HooksWorker
from tests.rigs.api_helpers import running_api
from tests.rigs.flusher_helpers import END_SESSIONS, admin, event, fill, make_message, redis_to_fill, url_of
from tests.rigs.hook_helpers import SECRET, hook_settings, http_receiver, no_hooks_left, running_worker, until  # noqa: F401
from tracker.contract.events import encode_batch, encode_event
from tracker.contract.keys import ENTRY_FIELD, committed_stream, forwarder_heartbeat_key, hook_group, shard_for
from tracker.streams.consumer import as_text


def http_hook(url: str, name: str = "crm") -> dict:
    return {"name": name, "destination": {"type": "http", "url": url, "secret": SECRET, "timeout_s": 0.3}}


def ids(events) -> set[str]:
    return {str(uuid.UUID(bytes=e.id)) for e in events}




@pytest.mark.slow  # several seconds of a real outage or processes: the full run has it
async def test_a_hook_stuck_on_postgres_lets_the_heartbeat_lapse_until_it_moves_again(settings, redis, own_database,
                                                                                      caplog):
    settings = hook_settings(settings.replace(database_url=own_database), heartbeat_ttl_s=2)
    caplog.set_level(logging.INFO, logger="hooks")
    import asyncpg

    pg = await asyncpg.connect(own_database)
    try:
        message = await make_message(pg)
    finally:
        await pg.close()
    events = [event(message, p) for p in range(1, 30)]
    with http_receiver() as receiver:
        async with running_api(settings) as api:
            assert (await api.call("POST", "/hooks", json=http_hook(receiver.url))).status_code == 201
            await push_committed(redis, settings, events[:10])
        async with running_worker(settings) as worker:
            key = forwarder_heartbeat_key(settings.stream_prefix, worker.consumer)
            await until(lambda: ids(events[:10]) <= {e["id"] for e in receiver.events()}, 10, "first deliveries")
            await until(lambda: redis.exists(key), 5, "a heartbeat")
            await admin(own_database, "alter database {db} allow_connections false", END_SESSIONS)
            await push_committed(redis, settings, events[10:])
            # Delivered, but recording the success waits on Postgres: entries in hand, not moving.
            await until(lambda: _not(redis.exists(key)), 15, "the heartbeat lapsing")
            await admin(own_database, "alter database {db} allow_connections true")
            await until(lambda: redis.exists(key), 15, "the heartbeat back")
            await until(lambda: ids(events) <= {e["id"] for e in receiver.events()}, 10, "every delivery")
    text = caplog.text
    assert "heartbeat withdrawn" in text and "heartbeat back" in text
    assert text.count("Postgres: record success failed") == 1 and text.count("Postgres: record success recovered") == 1


async def _not(awaitable) -> bool:
    return not await awaitable


async def push_committed(redis: Redis, settings, events) -> None:
    """Events as the flusher copies them after its commit (without the flusher: its Postgres may be refusing)."""
    for shard in range(settings.stream_shards):
        mine = [encode_event(e) for e in events if shard_for(e.profile_id, settings.stream_shards) == shard]
        if mine:
            await redis.xadd(committed_stream(settings.stream_prefix, shard), {ENTRY_FIELD: encode_batch(mine)})


@pytest.fixture
async def full_redis(tmp_path: Path, free_port: int) -> AsyncIterator[Redis]:
    async with redis_to_fill(tmp_path, free_port) as client:
        yield client


async def test_hooks_deliver_and_acknowledge_while_redis_is_full(settings, full_redis, pg):
    settings = hook_settings(settings.replace(redis_url=url_of(full_redis)))
    message = await make_message(pg)
    events = [event(message, p) for p in range(1, 40)]
    with http_receiver() as receiver:
        async with running_api(settings) as api:
            hook_id = (await api.call("POST", "/hooks", json=http_hook(receiver.url))).json()["id"]
            await push_committed(full_redis, settings, events)
        await fill(full_redis)
        await asyncio.wait_for(HooksWorker(settings, burst=True).run(), 30)  # its groups exist: found with XINFO
        assert {e["id"] for e in receiver.events()} == ids(events)
    for shard in range(settings.stream_shards):
        stream = committed_stream(settings.stream_prefix, shard)
        if await full_redis.exists(stream):
            groups = {as_text(g["name"]): g["pending"] for g in await full_redis.xinfo_groups(stream)}
            assert groups[hook_group(hook_id)] == 0

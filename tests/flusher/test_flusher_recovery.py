"""Nothing stops silently: a full Redis, a database that refuses, a fatal error, dead consumers, --check."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError, ResponseError

from tests.conftest import with_database
from tests.rigs.flusher_helpers import (
    END_SESSIONS,
    admin,
    check,
    drain,
    event,
    fill,
    flusher_env,
    log_of,
    make_message,
    make_profiles,
    push,
    redis_to_fill,
    start_flusher,
    stored_ids,
    url_of,
    wait_exit,
    wait_until,
)
from tracker.contract.keys import CONSUMER_GROUP, committed_stream, event_streams, hooks_count_key
from tracker.contract.snapshots import FlusherHeartbeatFacts
from tracker.streams.consumer import GroupConsumer, as_text
from tracker.streams.heartbeat import Heartbeat

# -- a Redis at maxmemory ------------------------------------------------------------------------


@pytest.fixture
async def full_redis(tmp_path: Path, free_port: int) -> AsyncIterator[Redis]:
    """A redis-server of its own (noeviction), to be filled with `fill` once the test has written its data."""
    async with redis_to_fill(tmp_path, free_port) as client:
        yield client


async def test_a_flusher_starting_while_redis_is_full_makes_room_for_its_group_and_drains(settings, full_redis, pg):
    settings = settings.replace(redis_url=url_of(full_redis))
    profiles = await make_profiles(pg, 30)
    message = await make_message(pg)
    events = [event(message, p, "opened") for p in profiles for _ in range(40)]
    await push(full_redis, settings, events, per_entry=20)
    await fill(full_redis)  # no flusher ever ran: the group does not exist, and XGROUP CREATE is refused

    flusher = await asyncio.wait_for(drain(settings), 60)

    assert sorted(await stored_ids(pg, [message])) == sorted(e.id for e in events)
    assert flusher.groupless.drained > 0  # room was made by storing and trimming without the group
    for stream in event_streams(settings.stream_prefix, settings.stream_shards):
        assert await full_redis.xlen(stream) == 0
        assert any(g["name"] == CONSUMER_GROUP.encode() for g in await full_redis.xinfo_groups(stream))


async def test_a_flusher_drains_and_acknowledges_while_redis_stays_full(settings, full_redis, pg, caplog):
    settings = settings.replace(redis_url=url_of(full_redis))
    profiles = await make_profiles(pg, 20)
    message, earlier_message = await make_message(pg), await make_message(pg)
    await drain(settings)  # the groups exist
    # Entries an earlier flusher acknowledged but never trimmed (its trims failed): trimming them frees memory.
    await push(full_redis, settings, [event(earlier_message, p, "opened") for p in profiles for _ in range(100)])
    streams = event_streams(settings.stream_prefix, settings.stream_shards)
    for stream in streams:
        for _name, entries in await full_redis.xreadgroup(CONSUMER_GROUP, "earlier", {stream: ">"}) or ():
            await full_redis.xack(stream, CONSUMER_GROUP, *[entry_id for entry_id, _ in entries])
    await full_redis.set(hooks_count_key(settings.stream_prefix), 1)  # a hook exists: batches are copied for it
    events = [event(message, p, "opened") for p in profiles for _ in range(25)]
    await push(full_redis, settings, events, per_entry=10)
    await fill(full_redis)

    with caplog.at_level(logging.INFO, logger="flusher"):
        flusher = await asyncio.wait_for(drain(settings, batch_max_events=200), 60)

    assert sorted(await stored_ids(pg, [message])) == sorted(e.id for e in events)
    assert flusher.stats["stored"] == len(events) and flusher.stats["trimmed"] > 0
    for stream in streams:
        assert (await full_redis.xpending(stream, CONSUMER_GROUP))["pending"] == 0
        assert await full_redis.xlen(stream) == 0
    # Every committed event reached the hooks' streams: copies wait for room, they are never skipped.
    assert flusher.committed.forwarded == len(events)
    copied = [await full_redis.xlen(committed_stream(settings.stream_prefix, n)) for n in range(settings.stream_shards)]
    assert sum(copied) > 0
    # XGROUP CREATE was refused, XINFO GROUPS found the group: nothing to say about it.
    assert "create consumer groups failed" not in caplog.text


async def test_the_heartbeat_and_the_groups_hold_while_redis_is_full(full_redis, key_prefix):
    key, stream = f"{key_prefix}:alive:x", f"{key_prefix}:s:{{0}}"
    consumer = GroupConsumer(full_redis, [stream], "g", "me", claim_idle_ms=60_000)
    await consumer.ensure_groups()
    await full_redis.set(key, b"facts of the last beat", px=3000)
    await fill(full_redis, headroom=-(64 << 10))

    beat = Heartbeat(full_redis, key, 30, lambda: FlusherHeartbeatFacts(consumer="x"))
    assert await beat.beat()  # SET refused: the key is kept alive with PEXPIRE
    assert await full_redis.get(key) == b"facts of the last beat" and await full_redis.pttl(key) > 29_000
    await consumer.ensure_groups()  # XGROUP CREATE refused, but the group exists: fine
    other = GroupConsumer(full_redis, [stream], "not-made-yet", "me", claim_idle_ms=60_000)
    with pytest.raises(OutOfMemoryError):  # refused and missing: the caller waits for room
        await other.ensure_groups()


# -- dead consumers -----------------------------------------------------------------------------------


@pytest.mark.slow  # several seconds of a real outage or processes: the full run has it
async def test_dead_flusher_consumers_are_removed_at_start_and_after_their_entries_are_taken_over(settings, redis, pg):
    profiles = await make_profiles(pg, 4)
    message = await make_message(pg)
    await drain(settings)  # the groups exist
    stream = event_streams(settings.stream_prefix, settings.stream_shards)[0]
    await push(redis, settings, [event(message, p) for p in profiles for _ in range(5)], per_entry=5)
    for name in ("dead-1", "dead-2"):  # they read and acknowledged, then died
        for _stream, entries in await redis.xreadgroup(CONSUMER_GROUP, name, {stream: ">"}, count=1) or ():
            await redis.xack(stream, CONSUMER_GROUP, *[entry_id for entry_id, _ in entries])
    await redis.xreadgroup(CONSUMER_GROUP, "crashed", {stream: ">"}, count=1)  # died holding an entry
    await asyncio.sleep(4.2)  # 2 heartbeat TTLs: idle longer than that with nothing pending, a consumer is dead

    flusher = await drain(settings, heartbeat_ttl_s=2, claim_idle_ms=100)

    names = [as_text(c["name"]) for c in await redis.xinfo_consumers(stream, CONSUMER_GROUP)]
    assert names == [flusher.consumer]  # "crashed" too, once its entry was taken over
    assert (await redis.xpending(stream, CONSUMER_GROUP))["pending"] == 0


# -- a database that refuses, and --check --------------------------------------------------------------




@pytest.mark.slow  # several seconds of a real outage: the full run has it
async def test_check_fails_while_the_start_up_waits_on_a_refusing_database(settings, redis, own_database):
    """Start-up maintenance holds back every batch: a database refusing it is a stall like a batch that cannot
    be committed, not a flusher with nothing to do."""
    settings = settings.replace(database_url=own_database)
    pg = await asyncpg.connect(own_database)
    try:
        message, profiles = await make_message(pg), await make_profiles(pg, 5)
    finally:
        await pg.close()
    await push(redis, settings, [event(message, p) for p in profiles])
    await admin(own_database, "alter database {db} allow_connections false", END_SESSIONS)
    process = start_flusher(settings, FLUSHER_CONSUMER="starting", FLUSHER_HEARTBEAT_TTL_S="2")
    try:
        # The first beat goes out before the start-up meets the database; then it is withdrawn.
        await wait_until(lambda: _logged(process, "heartbeat withdrawn"), 20, "the heartbeat withdrawn")
        assert await asyncio.to_thread(lambda: check(settings, "starting")) == 1
        assert process.poll() is None
        await admin(own_database, "alter database {db} allow_connections true")
        await wait_until(lambda: asyncio.to_thread(lambda: check(settings, "starting") == 0), 20, "a heartbeat again")
        pg = await asyncpg.connect(own_database)
        try:
            await wait_until(lambda: _stored_count(pg, message, len(profiles)), 30, "every event stored")
        finally:
            await pg.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert await wait_exit(process, 15) == 0, log_of(process)


async def _logged(process: subprocess.Popen, text: str) -> bool:
    return text in log_of(process)


async def _stored_count(pg: asyncpg.Connection, message: int, count: int) -> bool:
    return len(await stored_ids(pg, [message])) == count


@pytest.mark.slow  # several seconds of a real outage or processes: the full run has it
async def test_check_fails_while_batches_wait_on_a_refusing_database_and_passes_again_after(settings, redis,
                                                                                          own_database):
    settings = settings.replace(database_url=own_database)
    pg = await asyncpg.connect(own_database)
    try:
        profiles = await make_profiles(pg, 10)
        message = await make_message(pg)
    finally:
        await pg.close()
    process = start_flusher(settings, FLUSHER_CONSUMER="stuck", FLUSHER_HEARTBEAT_TTL_S="2",
                            FLUSHER_PG_CONNECTIONS="1")  # fmt: skip
    try:
        await wait_until(lambda: asyncio.to_thread(lambda: check(settings, "stuck") == 0), 15, "a heartbeat")

        async def reading() -> bool:  # past its start-up (maintenance included): it reads the streams
            stream = event_streams(settings.stream_prefix, settings.stream_shards)[0]
            with contextlib.suppress(ResponseError):
                return any(as_text(c["name"]) == "stuck" for c in await redis.xinfo_consumers(stream, CONSUMER_GROUP))
            return False

        await wait_until(reading, 15, "the flusher to read its streams")
        await admin(own_database, "alter database {db} allow_connections false", END_SESSIONS)
        events = [event(message, p) for p in profiles for _ in range(30)]
        await push(redis, settings, events)

        # Work in hand and nothing committed for a heartbeat TTL: the probe fails, the process stays up.
        await wait_until(lambda: asyncio.to_thread(lambda: check(settings, "stuck") == 1), 20, "--check failing")
        assert process.poll() is None

        await admin(own_database, "alter database {db} allow_connections true")
        pg = await asyncpg.connect(own_database)
        try:

            async def stored() -> bool:
                return len(await stored_ids(pg, [message])) == len(events)

            await wait_until(stored, 30, "every event stored")
        finally:
            await pg.close()
        await wait_until(lambda: asyncio.to_thread(lambda: check(settings, "stuck") == 0), 15, "a heartbeat again")
    finally:
        process.send_signal(signal.SIGTERM)
        code = await wait_exit(process, 15)
    log = log_of(process)
    assert code == 0, log
    # Logged once when it began and once when it ended, not once per try.
    failed = [line for line in log.splitlines() if "Postgres: store a batch" in line and " failed: " in line]
    recovered = [line for line in log.splitlines() if "Postgres: store a batch" in line and " recovered after " in line]
    # The first try may meet the session the server ended (asyncpg then reports its own state error)
    # rather than the refusal; either way one line says it began.
    assert len(failed) == 1, log
    assert "not currently accepting connections" in log or "InternalClientError" in failed[0], log
    assert len(recovered) == 1, log
    assert "heartbeat withdrawn" in log and "heartbeat back" in log


# -- fatal errors: one line, exit 1 -----------------------------------------------------------------


@pytest.fixture
async def empty_database(pg_admin_url: str) -> AsyncIterator[str]:
    """A database without the schema."""
    name = "trk_empty_" + secrets.token_hex(4)
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f'create database "{name}"')
        yield with_database(pg_admin_url, name)
    finally:
        await conn.execute(f'drop database if exists "{name}" with (force)')
        await conn.close()


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " ERROR " in line or " CRITICAL " in line]


async def test_a_missing_schema_stops_the_flusher_with_one_line_and_exit_code_1(settings, redis, empty_database):
    process = start_flusher(settings.replace(database_url=empty_database), FLUSHER_MIGRATE="false")
    code = await wait_exit(process, 30)
    log = log_of(process)
    assert code == 1, log
    (line,) = error_lines(log)
    assert "fatal, exiting: Postgres: maintenance: UndefinedTableError" in line and "flusher --migrate" in line
    assert "Traceback" not in log


@pytest.mark.parametrize("what", ["database role", "database name", "redis password"])
async def test_bad_credentials_stop_the_flusher_with_one_line_and_exit_code_1(settings, redis, what):
    if what == "database role":
        settings = settings.replace(database_url=settings.database_url.replace("://postgres", "://no_such_role", 1))
    elif what == "database name":
        settings = settings.replace(database_url=with_database(settings.database_url, "no_such_database"))
    else:
        parts = urlsplit(settings.redis_url)
        settings = settings.replace(redis_url=urlunsplit(parts._replace(netloc="nobody:wrong@" + parts.netloc)))
    process = start_flusher(settings)
    code = await wait_exit(process, 30)
    log = log_of(process)
    assert code == 1, log
    (line,) = error_lines(log)
    expected = {"database role": "InvalidAuthorizationSpecificationError", "database name": "InvalidCatalogNameError",
                "redis password": "Redis: connect: AuthenticationError"}[what]  # fmt: skip
    assert "fatal, exiting: " in line and expected in line, log
    assert "Traceback" not in log and "WARNING" not in log


async def test_a_missing_schema_stops_the_hooks_worker_with_one_line_and_exit_code_1(settings, redis, empty_database):
    env = flusher_env(settings.replace(database_url=empty_database))
    result = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "forwarder.cli"], env=env,
                                     capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1, result.stderr
    (line,) = error_lines(result.stderr)
    assert "fatal, exiting: " in line and "UndefinedTableError" in line, result.stderr
    assert "Traceback" not in result.stderr

"""Exactly-once under crashes, two flushers at once, Postgres restarted mid-run, SIGTERM, --check."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg
import pytest

from flusher.worker import Flusher
from tests.rigs.flusher_helpers import (
    FLUSHER_COMMAND,
    Workload,
    drain,
    event,
    flusher_env,
    flusher_settings,
    log_of,
    make_message,
    make_profiles,
    push,
    start_flusher,
    stored_ids,
    wait_exit,
    wait_until,
)
from tracker.contract.keys import CONSUMER_GROUP, event_streams
from tracker.contract.schema import migrate
from tracker.ops.embedded import EmbeddedPostgres

pytestmark = pytest.mark.slow




async def count_stored(pg: asyncpg.Connection, workload: Workload) -> int:
    return await pg.fetchval("select count(*) from events where message_id = any($1)", workload.messages)


async def pending_and_length(redis, settings) -> tuple[int, int]:
    pending = length = 0
    for stream in event_streams(settings.stream_prefix, settings.stream_shards):
        if await redis.exists(stream):
            pending += (await redis.xpending(stream, CONSUMER_GROUP))["pending"]
            length += await redis.xlen(stream)
    return pending, length


async def test_exactly_once_when_the_flusher_is_killed_again_and_again(settings, redis, own_database):
    settings = settings.replace(database_url=own_database)
    pg = await asyncpg.connect(own_database)
    try:
        workload = await Workload.create(pg, profiles=500, messages=4)
        pushed = workload.generate(100_000, random.Random(7), duplicates=0.02)
        await push(redis, settings, pushed, per_entry=200)
        variables = {"FLUSHER_BATCH_MAX_EVENTS": "4000", "FLUSHER_CONSUMER": "crashy", "FLUSHER_CLAIM_IDLE_MS": "500"}
        partial_kills = 0
        for round_ in range(4):
            process = start_flusher(settings, **variables)
            # Wait for progress, then kill it hard in the middle of whatever it is doing.
            before = await count_stored(pg, workload)

            async def progressed(before: int = before) -> bool:
                return await count_stored(pg, workload) > before

            await wait_until(progressed, 30, "progress")
            await asyncio.sleep(random.Random(round_).uniform(0.05, 0.3))
            process.send_signal(signal.SIGKILL)
            process.wait()
            stored = await count_stored(pg, workload)
            partial_kills += 0 < stored < len(workload.events)
            # Every other restart comes back under another name: the dead one's entries are reclaimed.
            variables["FLUSHER_CONSUMER"] = "crashy" if round_ % 2 else f"other-{round_}"
        assert partial_kills >= 2, "the flusher finished before it could be killed mid-run"

        process = start_flusher(settings, "--burst", **{**variables, "FLUSHER_CONSUMER": "finisher"})
        await asyncio.sleep(0.6)  # past the claim idle time of what the last victim held
        assert await wait_exit(process, 60) == 0, log_of(process)[-3000:]
        # A burst may end while entries of a killed consumer are not idle long enough yet; one more pass.
        process = start_flusher(settings, "--burst", **{**variables, "FLUSHER_CONSUMER": "finisher"})
        assert await wait_exit(process, 60) == 0

        await workload.check(pg)
        assert await pending_and_length(redis, settings) == (0, 0)
    finally:
        await pg.close()


async def test_two_flushers_at_once_give_the_same_result(settings, redis, own_database):
    settings = settings.replace(database_url=own_database)
    pg = await asyncpg.connect(own_database)
    try:
        workload = await Workload.create(pg, profiles=200, messages=3)
        pushed = workload.generate(30_000, random.Random(11), duplicates=0.05)
        variables = {"FLUSHER_BATCH_MAX_EVENTS": "500", "FLUSHER_BATCH_MAX_AGE_MS": "20"}
        flushers = [start_flusher(settings, "--log-level", "info", FLUSHER_CONSUMER=name, **variables)
                    for name in ("one", "two")]  # fmt: skip
        await asyncio.sleep(1.0)  # both started and waiting on the streams
        for start in range(0, len(pushed), 3000):
            await push(redis, settings, pushed[start : start + 3000], per_entry=50)

        async def all_stored() -> bool:
            return await count_stored(pg, workload) == len(workload.events)

        await wait_until(all_stored, 60, "every event stored")
        await asyncio.sleep(0.3)  # let the last acknowledgements land
        for process in flushers:
            process.send_signal(signal.SIGTERM)
        logs = []
        for process in flushers:
            assert await wait_exit(process, 10) == 0
            logs.append(log_of(process))
        # Both did part of the work.
        for log in logs:
            (line,) = [line for line in log.splitlines() if " stopped: " in line]
            assert re.search(r": [1-9][\d,]* stored, ", line), line
            # Both write the same counters and may hold copies of the same events: rows are
            # locked in one order, so neither waits out a deadlock detection.
            assert "Deadlock" not in log, log

        await workload.check(pg)
        assert (await pending_and_length(redis, settings))[0] == 0
    finally:
        await pg.close()


async def test_postgres_restarted_mid_run_loses_and_doubles_nothing(settings, redis, tmp_path):
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="trk-pgr-")))
    try:
        url = server.start()
        await migrate(url)
        pg = await asyncpg.connect(url)
        workload = await Workload.create(pg, profiles=100, messages=2)
        await pg.close()
        pushed = workload.generate(20_000, random.Random(3))
        await push(redis, settings, pushed, per_entry=50)
        flusher = Flusher(flusher_settings(settings.replace(database_url=url), batch_max_events=500), burst=True)
        task = asyncio.create_task(flusher.run())

        async def started() -> bool:
            return flusher.stats["stored"] > 0

        await wait_until(started, 30, "a first batch")
        await asyncio.to_thread(server.stop)
        assert not task.done()
        await asyncio.sleep(1.0)  # the flusher keeps retrying meanwhile
        assert server.start() == url
        await asyncio.wait_for(task, 60)

        pg = await asyncpg.connect(url)
        try:
            await workload.check(pg)
        finally:
            await pg.close()
        assert await pending_and_length(redis, settings) == (0, 0)
        assert flusher.stats["stored"] == len(workload.events)
    finally:
        server.wipe()


async def test_sigterm_finishes_the_batch_in_hand_and_exits_0(settings, redis, pg):
    profiles = await make_profiles(pg, 20)
    message = await make_message(pg)
    events = [event(message, p, "opened") for p in profiles for _ in range(1000)]
    await push(redis, settings, events, per_entry=100)
    process = start_flusher(settings, FLUSHER_BATCH_MAX_EVENTS="1000", FLUSHER_CONSUMER="term")

    async def started() -> bool:
        return bool(await stored_ids(pg, [message]))

    await wait_until(started, 30, "a first batch")
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert await wait_exit(process, 10) == 0
    assert time.monotonic() - started < 5
    # Whatever it had read is committed and acknowledged: nothing is left pending.
    pending, _ = await pending_and_length(redis, settings)
    assert pending == 0
    stored = set(await stored_ids(pg, [message]))
    assert 0 < len(stored) <= len(events)
    await drain(settings)
    assert sorted(await stored_ids(pg, [message])) == sorted(e.id for e in events)


async def test_check_reports_the_heartbeat(settings, redis):
    def check(name: str) -> int:
        return subprocess.run([*FLUSHER_COMMAND, "--check", "--consumer", name], env=flusher_env(settings),
                              capture_output=True, timeout=30).returncode  # fmt: skip

    assert await asyncio.to_thread(check, "probe") == 1
    process = start_flusher(settings, FLUSHER_CONSUMER="probe")
    try:

        async def alive() -> bool:
            return await asyncio.to_thread(check, "probe") == 0

        await wait_until(alive, 15, "a heartbeat")
        assert await asyncio.to_thread(check, "someone-else") == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert await wait_exit(process, 10) == 0
    assert await asyncio.to_thread(check, "probe") == 1


def test_help_and_bad_settings():
    result = subprocess.run([*FLUSHER_COMMAND, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for name in ("--burst", "--check", "--migrate", "FLUSHER_CONSUMER", "FLUSHER_BATCH_MAX_EVENTS", "REDIS_URL"):
        assert name in result.stdout
    result = subprocess.run(
        [*FLUSHER_COMMAND, "--burst"], capture_output=True, text=True, timeout=30,
        env={"PATH": "/usr/bin", "REDIS_URL": "redis://x", "DATABASE_URL": "postgresql://x/y",
             "FLUSHER_BATCH_MAX_EVENTS": "lots"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "FLUSHER_BATCH_MAX_EVENTS" in result.stderr

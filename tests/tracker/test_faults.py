"""Faults an operator meets, injected while a bounded load runs; recovery with no restart by hand.

Each scenario starts its own Redis server and uses its own database, runs a
real edge and real flushers (tests/rigs/fault_rig.py), injects the fault, clears it,
and checks that every answered hit is stored once or counted as dropped in
/metrics. With FAULT_REPORT=path each scenario appends its table row there
(scenario | hits | rows | dropped | lost | duplicated | first row after the fault cleared |
every hit stored or counted, from the end of the load).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.rigs.fault_rig import BIN, Outcome, Rig, wait_for
from tests.rigs.flusher_helpers import END_SESSIONS, admin

pytestmark = pytest.mark.slow


@pytest.fixture
async def rig(tmp_path: Path, own_database: str) -> AsyncIterator[Rig]:
    rig = Rig(tmp_path, own_database)
    try:
        yield rig
    finally:
        await rig.close()


def report(outcome: Outcome) -> None:
    print(outcome.line())
    if path := os.environ.get("FAULT_REPORT"):
        with open(path, "a") as out:
            out.write(outcome.line() + "\n")


def assert_exact(outcome: Outcome, rig: Rig) -> None:
    report(outcome)
    logs = "\n".join(f"--- {name}\n{rig.log(name)[-3000:]}" for name in rig.procs)
    assert outcome.hits > 0, logs
    assert (outcome.lost, outcome.duplicated) == (0, 0), f"{outcome}\n{logs}"


def flusher_check(rig: Rig, consumer: str = "flusher-1") -> int:
    check = [str(BIN / "flusher"), "--check", "--consumer", consumer]
    return subprocess.run(check, env=rig.env(), capture_output=True, timeout=30).returncode


async def start_stack(rig: Rig, flushers: int = 1) -> None:
    rig.start_redis()
    await rig.prepare()
    await rig.start_edge()
    for number in range(1, flushers + 1):
        rig.start_flusher(f"flusher-{number}")


async def test_redis_killed_for_30_seconds(rig: Rig) -> None:
    await start_stack(rig)
    load = asyncio.create_task(rig.load(seconds=45, rate=150))
    await asyncio.sleep(5)
    rig.kill_redis()
    await asyncio.sleep(30)
    rig.start_redis()  # same port and folder: the append-only file brings the streams back
    cleared = rig.cleared()
    outcome = Outcome("Redis killed 30 s", hits=await load)
    assert_exact(await rig.settle(outcome, cleared), rig)


async def test_redis_restarted_with_persistence(rig: Rig) -> None:
    await start_stack(rig)
    load = asyncio.create_task(rig.load(seconds=20, rate=200))
    await asyncio.sleep(6)
    rig.kill_redis()
    rig.start_redis()
    cleared = rig.cleared()
    outcome = Outcome("Redis SIGKILLed and restarted (append-only file)", hits=await load)
    assert_exact(await rig.settle(outcome, cleared), rig)
    # The flusher reconnected by itself and went on committing soon after Redis was back.
    assert outcome.resumed_s is not None and outcome.resumed_s < 5


async def test_redis_restarted_empty_after_15_seconds_the_flusher_resumes_at_once(rig: Rig) -> None:
    """Groups lost with the data (no persistence): made again, and the read retried at once, not after a backoff."""
    rig.persist = False
    rig.env_extra = {"FLUSHER_RETRY_MAX_S": "10"}  # the default: a backoff grown during the outage is long
    await start_stack(rig)
    hits = await rig.load(seconds=4, rate=150)
    await wait_for(lambda: _stored_at_least(rig, hits), 30, "the flusher to catch up before the outage")
    rig.kill_redis()
    load = asyncio.create_task(rig.load(seconds=15, rate=150))  # answered from the spool meanwhile
    await asyncio.sleep(15)
    rig.start_redis()
    cleared = rig.cleared()
    outcome = Outcome("Redis down 15 s, restarted empty (groups lost)", hits=hits + await load)
    assert_exact(await rig.settle(outcome, cleared), rig)
    assert outcome.resumed_s is not None and outcome.resumed_s < 5, outcome


async def test_database_refusing_connections_for_20_seconds(rig: Rig) -> None:
    await start_stack(rig)
    load = asyncio.create_task(rig.load(seconds=30, rate=150))
    await asyncio.sleep(3)
    await admin(rig.database_url, "alter database {db} allow_connections false", END_SESSIONS)
    await asyncio.sleep(15)
    check_while_stuck = await asyncio.to_thread(flusher_check, rig)
    await asyncio.sleep(5)
    await admin(rig.database_url, "alter database {db} allow_connections true")
    cleared = rig.cleared()
    outcome = Outcome("database refusing connections 20 s", hits=await load)
    assert_exact(await rig.settle(outcome, cleared), rig)
    assert rig.procs["flusher-1"].poll() is None, rig.log("flusher-1")
    # Work was pending and nothing moved: the liveness check said so (the heartbeat follows progress).
    assert check_while_stuck == 1, rig.log("flusher-1")
    await wait_for(lambda: asyncio.to_thread(lambda: flusher_check(rig) == 0), 10, "a live heartbeat again")


async def test_database_read_only_for_10_seconds(rig: Rig) -> None:
    await start_stack(rig)
    load = asyncio.create_task(rig.load(seconds=20, rate=150))
    await asyncio.sleep(3)
    await admin(rig.database_url, "alter database {db} set default_transaction_read_only = on", END_SESSIONS)
    await asyncio.sleep(10)
    # Sessions opened while it was read-only stay so: the flusher must notice and reconnect by itself.
    await admin(rig.database_url, "alter database {db} reset default_transaction_read_only")
    cleared = rig.cleared()
    outcome = Outcome("database read-only 10 s", hits=await load)
    assert_exact(await rig.settle(outcome, cleared), rig)


async def test_redis_at_maxmemory_with_the_flusher_behind(rig: Rig) -> None:
    rig.start_redis()
    await rig.prepare()
    await rig.start_edge()
    hits = await rig.load(seconds=5, rate=300)  # a backlog in the streams: no flusher runs yet
    await rig.fill_redis()  # another tenant fills Redis up to its maxmemory: writes are refused
    hits += await rig.load(seconds=10, rate=300)
    assert await rig.metric("edge_events_spooled_total") > 0, "the edge never spooled: Redis was not full"
    rig.start_flusher("flusher-1")  # starts while Redis is full: it must still make its group and drain
    await wait_for(lambda: _stored_at_least(rig, 1), 60, "the flusher to store from a full Redis")
    await rig.free_redis()  # the operator frees memory: the edge replays its spool
    cleared = rig.cleared()
    outcome = Outcome("Redis at maxmemory, flusher behind", hits=hits)
    assert_exact(await rig.settle(outcome, cleared, timeout=120), rig)


async def _stored_at_least(rig: Rig, count: int) -> bool:
    return (await rig.rows())[0] >= count


async def spool_overflow(rig: Rig, scenario: str) -> None:
    """Redis down for 10 s under load, so that the spool overflows; every drop must be counted."""
    await start_stack(rig)
    load = asyncio.create_task(rig.load(seconds=20, rate=200))
    await asyncio.sleep(3)
    rig.kill_redis()
    await asyncio.sleep(10)
    rig.start_redis()
    cleared = rig.cleared()
    outcome = await rig.settle(Outcome(scenario, hits=await load), cleared)
    assert outcome.dropped > 0, "the spool never overflowed: the scenario tested nothing"
    assert_exact(outcome, rig)


async def test_spool_size_limit_reached_drops_are_counted_exactly(rig: Rig) -> None:
    rig.env_extra = {"TRACKER_SPOOL_MAX_BYTES": "65536"}
    await spool_overflow(rig, "spool size limit reached (Redis down 10 s)")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a tmpfs needs root")
async def test_spool_on_a_full_filesystem_drops_are_counted_exactly(rig: Rig) -> None:
    spool = rig.tmp / "spool"
    spool.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(spool)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        await spool_overflow(rig, "spool on a 64 KiB filesystem (Redis down 10 s)")
    finally:
        await rig.close()
        subprocess.run(["umount", "-l", str(spool)], check=False)


async def test_three_flushers_sigkilled_every_2_seconds(rig: Rig) -> None:
    await start_stack(rig, flushers=3)
    load = asyncio.create_task(rig.load(seconds=30, rate=200))
    for round_ in range(14):
        await asyncio.sleep(2)
        name = f"flusher-{round_ % 3 + 1}"
        rig.kill(name)
        rig.start_flusher(name)
    cleared = rig.cleared()
    outcome = Outcome("three flushers SIGKILLed every 2 s", hits=await load)
    assert_exact(await rig.settle(outcome, cleared), rig)

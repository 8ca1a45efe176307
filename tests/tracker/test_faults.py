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
import time
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


async def test_redis_killed_while_the_edge_spools_2000_hits(rig: Rig) -> None:
    await start_stack(rig)
    load = asyncio.create_task(rig.load(seconds=30, rate=150))
    await running(rig)
    rig.kill_redis()
    down_at = time.monotonic()
    # Long enough for the flusher's backoff to grow to its cap and the spool to hold a real share of the load.
    await wait_for(lambda: _spooled_at_least(rig, 2000), 60, "the edge to spool 2,000 hits")
    rig.start_redis()  # same port and folder: the append-only file brings the streams back
    cleared = rig.cleared()
    outcome = Outcome(f"Redis killed {time.monotonic() - down_at:.0f} s (2,000 hits spooled)", hits=await load)
    assert_exact(await rig.settle(outcome, cleared), rig)


async def test_redis_restarted_with_persistence(rig: Rig) -> None:
    await start_stack(rig)
    load = asyncio.create_task(rig.load(seconds=15, rate=200))
    await running(rig)
    rig.kill_redis()
    rig.start_redis()
    cleared = rig.cleared()
    outcome = Outcome("Redis SIGKILLed and restarted (append-only file)", hits=await load)
    assert_exact(await rig.settle(outcome, cleared), rig)
    # The flusher reconnected by itself and went on committing soon after Redis was back.
    assert outcome.resumed_s is not None and outcome.resumed_s < 5


async def test_redis_restarted_empty_after_a_long_outage_the_flusher_resumes_at_once(rig: Rig) -> None:
    """Groups lost with the data (no persistence): made again, and the read retried at once, not after a backoff."""
    rig.persist = False
    rig.env_extra = {"FLUSHER_RETRY_MAX_S": "10"}  # the default: a backoff grown during the outage is long
    await start_stack(rig)
    hits = await rig.load(seconds=4, rate=150)
    await wait_for(lambda: _stored_at_least(rig, hits), 30, "the flusher to catch up before the outage")
    rig.kill_redis()
    down_at = time.monotonic()
    load = asyncio.create_task(rig.load(seconds=20, rate=150))  # answered from the spool meanwhile
    # Down ~13 s, until the flusher's backoff has grown to its cap (10 s): the read after the restart must not wait
    # it out.
    await wait_for(lambda: _spooled_at_least(rig, 2000), 60, "the edge to spool 2,000 hits")
    rig.start_redis()
    cleared = rig.cleared()
    outcome = Outcome(f"Redis down {time.monotonic() - down_at:.0f} s, restarted empty (groups lost)",
                      hits=hits + await load)  # fmt: skip
    assert_exact(await rig.settle(outcome, cleared), rig)
    assert outcome.resumed_s is not None and outcome.resumed_s < 5, outcome


async def test_database_refusing_connections_until_the_liveness_check_fails(rig: Rig) -> None:
    await start_stack(rig)
    load = asyncio.create_task(rig.load(seconds=20, rate=150))
    await running(rig)
    await admin(rig.database_url, "alter database {db} allow_connections false", END_SESSIONS)
    down_at = time.monotonic()
    # Work is pending and nothing moves: the liveness check must say so (the heartbeat follows progress).
    await wait_for(lambda: asyncio.to_thread(lambda: flusher_check(rig) == 1), 40, "--check to fail while stuck")
    await admin(rig.database_url, "alter database {db} allow_connections true")
    cleared = rig.cleared()
    outcome = Outcome(f"database refusing connections {time.monotonic() - down_at:.0f} s", hits=await load)
    assert_exact(await rig.settle(outcome, cleared), rig)
    assert rig.procs["flusher-1"].poll() is None, rig.log("flusher-1")
    await wait_for(lambda: asyncio.to_thread(lambda: flusher_check(rig) == 0), 10, "a live heartbeat again")


async def test_database_read_only_until_the_flusher_meets_it(rig: Rig) -> None:
    await start_stack(rig)
    load = asyncio.create_task(rig.load(seconds=15, rate=150))
    await running(rig)
    await admin(rig.database_url, "alter database {db} set default_transaction_read_only = on", END_SESSIONS)
    await wait_for(lambda: _logged(rig, "flusher-1", "read-only"), 30, "the flusher to meet the read-only database")
    # Sessions opened while it was read-only stay so: the flusher must notice and reconnect by itself.
    await admin(rig.database_url, "alter database {db} reset default_transaction_read_only")
    cleared = rig.cleared()
    outcome = Outcome("database read-only until the flusher met it", hits=await load)
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


async def _spooled_at_least(rig: Rig, count: int) -> bool:
    return await rig.metric("edge_events_spooled_total") >= count


async def _dropped_some(rig: Rig) -> bool:
    return await rig.dropped() > 0


async def _logged(rig: Rig, name: str, text: str) -> bool:
    return text in rig.log(name)


async def running(rig: Rig) -> None:
    """Before a fault: the load reaches Postgres."""
    await wait_for(lambda: _stored_at_least(rig, 100), 30, "the first 100 rows")


async def spool_overflow(rig: Rig, scenario: str) -> None:
    """Redis down for 10 s under load, so that the spool overflows; every drop must be counted."""
    await start_stack(rig)
    load = asyncio.create_task(rig.load(seconds=15, rate=200))
    await running(rig)
    rig.kill_redis()
    await wait_for(lambda: _dropped_some(rig), 30, "the spool to overflow and drop")
    rig.start_redis()
    cleared = rig.cleared()
    outcome = await rig.settle(Outcome(scenario, hits=await load), cleared)
    assert outcome.dropped > 0, "the spool never overflowed: the scenario tested nothing"
    assert_exact(outcome, rig)


async def test_spool_size_limit_reached_drops_are_counted_exactly(rig: Rig) -> None:
    rig.env_extra = {"TRACKER_SPOOL_MAX_BYTES": "65536"}
    await spool_overflow(rig, "spool size limit reached (Redis down until it drops)")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a tmpfs needs root")
async def test_spool_on_a_full_filesystem_drops_are_counted_exactly(rig: Rig) -> None:
    spool = rig.tmp / "spool"
    spool.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(spool)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        await spool_overflow(rig, "spool on a 64 KiB filesystem (Redis down until it drops)")
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

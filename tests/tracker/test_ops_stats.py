"""`tracker stats`: what an operator sees of streams, pending entries, dead letters, flushers and the spool."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tracker.contract.keys import (
    CONSUMER_GROUP,
    dead_letter_stream,
    event_stream,
    flusher_heartbeat_key,
    flusher_metrics_key,
    forwarder_heartbeat_key,
)
from tracker.contract.spool_format import holder_of, holds_lock, lock_holders
from tracker.ops.cli import main


@pytest.fixture
def stats_env(settings, monkeypatch):
    """The environment `tracker stats` reads, pointing at this test's prefix and spool folder."""
    env = {
        "REDIS_URL": settings.redis_url,
        "TRACKER_STREAM_PREFIX": settings.stream_prefix,
        "TRACKER_STREAM_SHARDS": "2",
        "TRACKER_SPOOL_DIR": str(settings.edge.spool_dir),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


async def an_incident(redis, settings, spool_holder: list[int]) -> int:
    """Shard 0: three entries, two delivered to a consumer and not acknowledged; shard 1: empty.

    One dead letter, one flusher with heartbeat and metrics, a spool file held
    by a live writer (this process) and an orphan one half replayed. Returns
    Redis' clock in ms at set-up, which the entry ids are relative to.
    """
    prefix = settings.stream_prefix
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros // 1000
    shard0, shard1 = event_stream(prefix, 0), event_stream(prefix, 1)
    for stream in (shard0, shard1):
        await redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
    for age_ms in (10_000, 5_000, 1_000):
        await redis.xadd(shard0, {b"e": b"x"}, id=f"{now_ms - age_ms}-0")
    await redis.xreadgroup(CONSUMER_GROUP, "flusher-a", {shard0: ">"}, count=2)
    await redis.xadd(dead_letter_stream(prefix), {b"e": b"\xc1", b"reason": b"undecodable entry: boom"})
    heartbeat = {"consumer": "flusher-a", "pid": 4242, "at": time.time() - 1}
    await redis.set(flusher_heartbeat_key(prefix, "flusher-a"), json.dumps(heartbeat), ex=30)
    snapshot = {
        "consumer": "flusher-a",
        "batches": 3,
        "rows_written": 250,
        "duplicates": 1,
        "dead_lettered": 1,
        "lag_s": 10.0,
        "commit_seconds": {"buckets": {"+Inf": 3}, "sum": 0.03, "count": 3},
        "at": time.time(),
        "step_seconds": {"judge": 1.0, "insert": 3.0},
    }
    await redis.set(flusher_metrics_key(prefix, "flusher-a"), json.dumps(snapshot), ex=15)

    spool = settings.edge.spool_dir
    spool.mkdir(parents=True)
    (spool / "edge-111.spool").write_bytes(b"x" * 300)
    (spool / "edge-111.offset").write_text("100")
    held = os.open(spool / "edge-222.spool", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(held, b"y" * 50)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    spool_holder.append(held)
    return now_ms


@pytest.fixture
def spool_holder():
    fds: list[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


async def test_json_output_counts_streams_pending_dead_letters_flushers_and_spool(
    settings, redis, stats_env, spool_holder, capsys
):
    await an_incident(redis, settings, spool_holder)
    assert main(["stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    prefix = settings.stream_prefix

    shard0, shard1 = stats["streams"]
    assert (shard0["stream"], shard0["length"]) == (event_stream(prefix, 0), 3)
    (group,) = shard0["groups"]
    assert (group["name"], group["pending"], group["unread"]) == (CONSUMER_GROUP, 2, 1)
    assert 9.0 <= group["oldest_pending_age_s"] < 15.0
    assert 0.5 <= group["oldest_unread_age_s"] < 6.0
    assert group["last_delivered_id"].endswith("-0")
    (consumer,) = group["consumers"]
    assert (consumer["name"], consumer["pending"]) == ("flusher-a", 2)
    assert 0 <= consumer["idle_s"] < 5
    (empty,) = shard1["groups"]
    assert (shard1["length"], empty["pending"], empty["oldest_pending_age_s"], empty["unread"]) == (0, 0, None, 0)

    dead = stats["dead_letters"]
    assert (dead["stream"], dead["length"], dead["newest_reason"]) == (
        dead_letter_stream(prefix), 1, "undecodable entry: boom")  # fmt: skip

    (beat,) = stats["flushers"]
    assert (beat["consumer"], beat["pid"]) == ("flusher-a", 4242)
    assert 0.5 <= beat["age_s"] < 5 and 0 < beat["expires_in_s"] <= 30
    (metrics,) = stats["flusher_metrics"]
    assert (metrics["rows_written"], metrics["lag_s"]) == (250, 10.0)

    spool = stats["spool"]
    assert spool["directory"] == str(settings.edge.spool_dir.absolute()) and "local" in spool["note"]
    files = {f["name"]: f for f in spool["files"]}
    assert (files["edge-111.spool"]["bytes"], files["edge-111.spool"]["replayed_bytes"]) == (300, 100)
    assert files["edge-111.spool"]["locked"] is False
    assert (files["edge-222.spool"]["bytes"], files["edge-222.spool"]["locked"]) == (50, True)
    assert files["edge-222.spool"]["holder_pid"] == os.getpid()

    server = stats["redis"]
    assert server["used_memory_bytes"] > 0 and server["connected_clients"] >= 1 and server["ops_per_sec"] >= 0


async def test_the_table_for_people_shows_the_same_facts(settings, redis, stats_env, spool_holder, capsys):
    await an_incident(redis, settings, spool_holder)
    assert main(["stats"]) == 0
    table = capsys.readouterr().out
    assert event_stream(settings.stream_prefix, 0) in table
    assert "flusher-a" in table and "alive" in table and "250" in table
    assert "flusher-a batch steps: judge 1.0 s (25%), insert 3.0 s (75%)" in table
    assert "Dead letters: 1" in table and "undecodable entry: boom" in table
    assert "orphan, awaiting replay" in table and f"held by pid {os.getpid()}" in table


async def test_without_any_stream_or_flusher_it_says_so_and_exits_0(settings, redis, stats_env, capsys):
    assert main(["stats"]) == 0
    table = capsys.readouterr().out
    assert "no flusher is running" in table and "folder does not exist" in table


def test_unreachable_redis_exits_1_with_a_clear_message(stats_env, free_port, monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port}/0")
    assert main(["stats", "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"tracker stats: Redis unreachable at redis://127.0.0.1:{free_port}/0")


def test_bad_watch_interval_and_missing_redis_url_are_usage_errors(stats_env, monkeypatch, capsys):
    assert main(["stats", "--watch", "0"]) == 2
    assert "--watch 0" in capsys.readouterr().err
    monkeypatch.delenv("REDIS_URL")
    assert main(["stats"]) == 2
    assert "REDIS_URL" in capsys.readouterr().err


async def test_watch_redraws_in_place_and_ctrl_c_exits_0(settings, redis, stats_env):
    process = subprocess.Popen(
        [sys.executable, "-m", "tracker.ops.cli", "stats", "--watch", "0.2"],
        env={**os.environ, **stats_env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(1.5)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    frames = out.decode().split("\x1b[H\x1b[2J")
    assert len(frames) >= 3 and "Event streams" in frames[-1]


def test_the_lock_probe_and_proc_locks_say_the_same_about_spool_files(tmp_path):
    held, free, gone = tmp_path / "edge-1.spool", tmp_path / "edge-2.spool", tmp_path / "edge-3.spool"
    free.write_bytes(b"")
    fd = os.open(held, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert (holds_lock(held), holds_lock(free), holds_lock(gone)) == (True, False, None)
        holders = lock_holders()
        if holders is not None:  # Linux
            assert (holder_of(held.stat(), holders), holder_of(free.stat(), holders)) == (os.getpid(), None)
        assert holds_lock(held) is True  # probing did not take the holder's lock away
    finally:
        os.close(fd)


async def test_redis_memory_persistence_and_stream_memory_are_shown(settings, redis, stats_env, spool_holder, capsys):
    await an_incident(redis, settings, spool_holder)
    info = await redis.info()
    assert main(["stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    server = stats["redis"]
    assert (server["maxmemory_bytes"], server["maxmemory_policy"]) == (info["maxmemory"], info["maxmemory_policy"])
    assert server["aof_enabled"] is bool(info["aof_enabled"]) and server["persistence_ok"] is True
    assert server["last_save_age_s"] >= 0 and server["changes_since_last_save"] >= 0
    shard0, shard1 = stats["streams"]
    assert shard0["memory_bytes"] > 0 and shard1["memory_bytes"] > 0  # shard 1: an empty stream with its group
    assert stats["dead_letters"]["memory_bytes"] > 0

    assert main(["stats"]) == 0
    table = capsys.readouterr().out
    assert f"policy {info['maxmemory_policy']}" in table
    assert ("append-only on" if info["aof_enabled"] else "append-only OFF") in table
    assert "in streams (sampled): events" in table and "last RDB save" in table


async def test_a_hooks_worker_without_hooks_is_shown_alive_from_its_heartbeat(settings, redis, stats_env, capsys):
    env = {**os.environ, **stats_env, "DATABASE_URL": settings.database_url, "TRACKER_HOOKS_CONSUMER": "fw-idle"}
    forwarder = Path(sys.executable).parent / "forwarder"
    process = subprocess.Popen([str(forwarder), "--log-level", "warning"], env=env, stderr=subprocess.PIPE)
    try:
        key = forwarder_heartbeat_key(settings.stream_prefix, "fw-idle")
        for _ in range(200):  # until its first heartbeat (it may take a few seconds on a busy machine)
            if await redis.exists(key) or process.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert await redis.exists(key), process.stderr.read().decode() if process.poll() is not None else "no beat"
        assert main(["stats", "--json"]) == 0
        view = json.loads(capsys.readouterr().out)["hooks"]
        assert (view["hooks"], view["workers"]) == ([], ["fw-idle"])
        assert main(["stats"]) == 0
        assert "Action hooks (workers: fw-idle)" in capsys.readouterr().out
    finally:
        process.terminate()
        process.communicate(timeout=20)
    await redis.delete(key)  # in case the worker could not remove it on its way out
    assert main(["stats"]) == 0
    assert "Action hooks (workers: none alive)" in capsys.readouterr().out

"""`tracker doctor`: live Redis and Postgres settings checked against what the guarantees need."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tracker.config import Settings
from tracker.ops.doctor import FAIL, OK, WARN, diagnose
from tracker.ops.embedded import EmbeddedRedis


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def redis_server(tmp_path: Path, request):
    persist, *extra = request.param
    server = EmbeddedRedis(tmp_path / "redis", port=_port(), persist=persist, extra_args=tuple(extra))
    server.start()
    yield server
    server.stop()


def levels(findings) -> dict[str, str]:
    return {f"{f.service} {f.check}": f.level for f in findings}


@pytest.mark.parametrize("redis_server", [(True, "--maxmemory", "64mb")], indirect=True)
async def test_a_persistent_non_evicting_redis_and_a_migrated_database_pass(redis_server, settings) -> None:
    from tracker.contract.schema import migrate

    await migrate(settings.database_url)
    found = levels(await diagnose(settings.replace(redis_url=redis_server.url)))
    assert found["redis persistence"] == OK
    assert found["redis eviction"] == OK
    assert found["redis memory"] == OK
    assert found["postgres schema"] == OK
    assert found["postgres writable"] == OK and found["postgres durability"] == OK
    assert FAIL not in found.values()


@pytest.mark.parametrize("redis_server", [(False, "--maxmemory-policy", "allkeys-lru", "--maxmemory", "0")],
                         indirect=True)  # fmt: skip
async def test_a_redis_that_forgets_or_evicts_fails_with_what_to_set(redis_server, settings) -> None:
    findings = await diagnose(settings.replace(redis_url=redis_server.url))
    by_check = {f"{f.service} {f.check}": f for f in findings}
    assert by_check["redis persistence"].level == FAIL
    assert "appendonly yes" in by_check["redis persistence"].detail
    assert by_check["redis eviction"].level == FAIL
    assert "noeviction" in by_check["redis eviction"].detail
    assert by_check["redis memory"].level == WARN  # no maxmemory: Redis cannot refuse before the kernel kills it


async def test_the_embedded_redis_of_tracker_run_passes_with_nothing_to_change(tmp_path) -> None:
    from tracker.ops.doctor import check_redis

    server = EmbeddedRedis(tmp_path / "redis")  # as `tracker run` starts it
    try:
        findings = await check_redis(server.start())
    finally:
        server.stop()
    assert {f.level for f in findings} == {OK}, findings
    memory = next(f for f in findings if f.check == "memory")
    limit_mib = float(memory.detail.split(" of ")[1].split(" MiB")[0])
    assert 64 <= limit_mib <= 1024  # a quarter of this machine's memory, at most 1 GiB


async def test_an_unmigrated_database_and_unreachable_redis_fail(pg_admin_url) -> None:
    import secrets

    import asyncpg

    from tests.conftest import with_database

    name = "trk_doctor_" + secrets.token_hex(4)
    admin = await asyncpg.connect(pg_admin_url)
    await admin.execute(f'create database "{name}"')  # empty: no migrations
    try:
        url = with_database(pg_admin_url, name)
        settings = Settings.from_env({}, redis_url=f"redis://127.0.0.1:{_port()}/0", database_url=url)
        found = levels(await diagnose(settings))
    finally:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()
    assert found["redis reachable"] == FAIL
    assert found["postgres schema"] == FAIL
    assert found["settings signing keys"] == WARN


def test_the_command_exits_1_on_a_failure_and_prints_json(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": f"redis://127.0.0.1:{_port()}/0"}
    done = subprocess.run([sys.executable, "-m", "tracker.ops.cli", "doctor", "--json"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1, done.stderr
    findings = json.loads(done.stdout)
    missing = {"service": "postgres", "check": "configured", "level": FAIL, "detail": "DATABASE_URL is not set"}
    assert missing in findings

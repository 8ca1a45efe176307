"""Fixtures for real services.

With DATABASE_URL / REDIS_URL set (as CI does), tests use those servers: each
test session creates and drops its own database, and each test gets its own
Redis key prefix. Without them, embedded servers are started from the wheels.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from redis.asyncio import Redis

from tracker.config import Settings
from tracker.contract.schema import migrate
from tracker.ops.embedded import EmbeddedPostgres, EmbeddedRedis

TEST_KEYS = {1: b"test-signing-key-one-0123456789", 2: b"test-signing-key-two-0123456789"}


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="trk-pg-")))
    try:
        yield server.start()
    finally:
        server.wipe()


@asynccontextmanager
async def fresh_database(admin_url: str, prefix: str = "trk_test_") -> AsyncIterator[str]:
    """A new, migrated database on the admin URL's server, dropped afterwards."""
    name = prefix + secrets.token_hex(4)
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'create database "{name}"')
    url = with_database(admin_url, name)
    try:
        await migrate(url)
        yield url
    finally:
        # A fault test may have left it refusing connections; dropping works either way, this keeps it plain.
        await admin.execute(f'alter database "{name}" allow_connections true')
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


@pytest.fixture
async def own_database(pg_admin_url: str) -> AsyncIterator[str]:
    """A database of its own, for tests that count exactly or inject faults into it: nothing else writes there."""
    async with fresh_database(pg_admin_url, "trk_own_") as url:
        yield url


@pytest.fixture(scope="session")
async def database_url(pg_admin_url: str) -> AsyncIterator[str]:
    async with fresh_database(pg_admin_url) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="trk-rd-")), persist=False)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def key_prefix() -> str:
    return "t" + secrets.token_hex(4)


@pytest.fixture
def settings(redis_url: str, database_url: str, key_prefix: str, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {},
        redis_url=redis_url,
        database_url=database_url,
        signing_keys=dict(TEST_KEYS),
        stream_prefix=key_prefix,
        edge={"spool_dir": tmp_path / "spool", "batch_max_age_ms": 2.0, "redis_retry_s": 0.1},
        # Clicks act as soon as they are stored, and test events come right after their deliveries:
        # the verdict tests set their own settle window and timing rule.
        flusher={"settle_s": 0.0, "too_fast_s": 0.0},
    )


@pytest.fixture
async def redis(redis_url: str, key_prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{key_prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def free_port() -> int:
    """A TCP port nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

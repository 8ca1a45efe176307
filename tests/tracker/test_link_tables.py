"""Link tables: only safe absolute http(s) URLs get in, checked in Python and again by Postgres."""

from __future__ import annotations

import asyncpg
import pytest

from tracker.contract.schema import available, migrate
from tracker.domain.link_tables import Link, add_version, create_message, load_version

UNSAFE = [
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "/relative/path",
    "//evil.example/",
    "https://example.com/\r\nSet-Cookie: a=b",
    "https://example.com/a b",
    "https://example.com/\x00",
    "https:///no-host",
    "ftp://example.com/file",
    "https://exämple.com/",
    "https://example.com/" + "a" * 5000,
]


@pytest.mark.parametrize("url", UNSAFE)
async def test_unsafe_urls_are_refused_when_written(pg, url: str) -> None:
    message_id, version = await create_message(pg, "email", "unsafe", [Link("https://example.com/first")])
    with pytest.raises(ValueError, match="link 1: "):
        await add_version(pg, message_id, [Link("https://example.com/ok"), Link(url)])
    assert await pg.fetchval("select current_version from messages where id = $1", message_id) == version


@pytest.mark.parametrize("url", ["javascript:alert(1)", "https://example.com/\r\nX: y", "//evil.example/"])
async def test_postgres_refuses_unsafe_urls_even_from_raw_sql(pg, url: str) -> None:
    message_id, _ = await create_message(pg, "email", "raw", [Link("https://example.com/")])
    with pytest.raises(asyncpg.CheckViolationError):
        await pg.execute("insert into links (message_id, version, idx, url) values ($1, 1, 5, $2)", message_id, url)


async def test_versions_round_trip(pg) -> None:
    links = [Link("https://example.com/a", {"update-plan": "gold"}), Link("http://example.org/b?q=1#frag")]
    message_id, version = await create_message(pg, "sms", "rt", links)
    table = await load_version(pg, message_id, version)
    assert table is not None and table.channel == "sms" and table.links == links
    assert await load_version(pg, message_id, version + 1) is None
    with pytest.raises(LookupError):
        await add_version(pg, 10**12, links)


async def test_migrations_apply_once(database_url) -> None:
    assert await migrate(database_url) == []  # the fixture applied them already
    conn = await asyncpg.connect(database_url)
    try:
        done = [row[0] for row in await conn.fetch("select version from schema_migrations order by version")]
    finally:
        await conn.close()
    assert done == [number for number, _, _ in available()]

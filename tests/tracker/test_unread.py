"""A group's unread entries, counted the same on Redis 6.2 (no `lag` in XINFO GROUPS) as Redis 7 reports them."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis

from tracker.ops.embedded import EmbeddedRedis
from tracker.streams.unread import COUNT_UP_TO, UNREAD_SCRIPT, queue_unread, unread_of


@pytest.fixture(scope="module")
def embedded_redis_url(tmp_path_factory: pytest.TempPathFactory):
    """The Redis 6.2 that `tracker run` embeds: it has no group lag of its own."""
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("unread-redis")), persist=False)
    try:
        yield server.start()
    finally:
        server.stop()


async def _group(client: Redis, stream: str) -> dict:
    (group,) = await client.xinfo_groups(stream)
    return group


async def _unread(client: Redis, stream: str) -> int | None:
    group = await _group(client, stream)
    async with client.pipeline(transaction=False) as pipe:
        queued = queue_unread(pipe, stream, group)
        counted = await pipe.execute() if queued else [None]
    return unread_of(group, counted[0])


@pytest.mark.parametrize("server", ["embedded", "configured"])
async def test_unread_entries_are_counted_where_redis_gives_no_lag(server, embedded_redis_url, redis_url, key_prefix):
    client = Redis.from_url(embedded_redis_url if server == "embedded" else redis_url)
    stream = f"{key_prefix}:unread"
    try:
        ids = [await client.xadd(stream, {"e": b"x" * 200}) for _ in range(50)]
        await client.xgroup_create(stream, "g", id="0")
        assert await _unread(client, stream) == 50
        await client.xreadgroup("g", "c", {stream: ">"}, count=20)
        assert await _unread(client, stream) == 30
        # The flusher trims acknowledged entries: Redis 7 then has no lag to give, the count still holds.
        await client.xack(stream, "g", *ids[:20])
        await client.xtrim(stream, minid=ids[20])
        assert await _unread(client, stream) == 30
        await client.xreadgroup("g", "c", {stream: ">"}, count=100)
        assert await _unread(client, stream) == 0
        group = await _group(client, stream)
        if "lag" in group and isinstance(group["lag"], int):  # Redis 7: the script agrees with Redis' own count
            assert await client.eval(UNREAD_SCRIPT, 1, stream, group["last-delivered-id"], COUNT_UP_TO) == group["lag"]
    finally:
        await client.delete(stream)
        await client.aclose()


async def test_a_group_far_behind_on_both_sides_of_its_cursor_is_unknown(redis_url, key_prefix):
    client = Redis.from_url(redis_url)
    stream = f"{key_prefix}:far"
    try:
        ids = [await client.xadd(stream, {"e": "x"}) for _ in range(9)]
        await client.xgroup_create(stream, "g", id=ids[4])
        # A cap of 3: five entries held up to the cursor and four past it are both too many to count.
        counted = await client.eval(UNREAD_SCRIPT, 1, stream, ids[4], 3)
        assert counted == -1 and unread_of({"lag": None}, counted) is None
        assert await client.eval(UNREAD_SCRIPT, 1, stream, ids[4], 4) == 4  # past the cursor: counted
        assert await client.eval(UNREAD_SCRIPT, 1, stream, ids[4], 5) == 4  # held ones within the cap
    finally:
        await client.delete(stream)
        await client.aclose()

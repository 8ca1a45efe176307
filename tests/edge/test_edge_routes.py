"""The open pixel and click redirect, end to end: HTTP in, events out on the Redis streams."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from edge.responses import GIF
from tests.rigs.edge_helpers import running_edge, stream_events, wait_for_events
from tracker.contract import signals
from tracker.contract.keys import link_table_key
from tracker.contract.tokens import Channel, TokenKind, mint
from tracker.domain.link_tables import Link, add_version, create_message

UA_IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15"


def open_token(settings, message_id: int, profile_id: int, channel: Channel = Channel.EMAIL) -> str:
    return mint(settings.signing_keys, 1, TokenKind.OPEN, channel, message_id, profile_id)


def click_token(settings, message_id: int, profile_id: int, version: int, index: int) -> str:
    return mint(settings.signing_keys, 1, TokenKind.CLICK, Channel.EMAIL, message_id, profile_id, version, index)


async def assert_no_events(redis, settings, wait: float = 0.05) -> None:
    await asyncio.sleep(wait)  # several batch ages: anything buffered would be written by now
    assert await stream_events(redis, settings) == []


@pytest.fixture
async def message(pg) -> tuple[int, int]:
    return await create_message(
        pg,
        "email",
        "routes",
        [Link("https://example.com/a?x=1&y=%20"), Link("https://shop.example.org/b", {"update-vip": "true"})],
    )


async def test_open_pixel_answers_the_gif_and_records_opened(settings, redis, message) -> None:
    message_id, _ = message
    before_us = time.time_ns() // 1000
    async with running_edge(settings) as (_app, client):
        for suffix in ("", ".gif"):
            response = await client.get(
                f"/o/{open_token(settings, message_id, 7)}{suffix}", headers={"user-agent": UA_IPHONE}
            )
            assert response.status_code == 200
            assert response.content == GIF and len(GIF) == 43
            assert response.headers["content-type"] == "image/gif"
            assert "no-store" in response.headers["cache-control"]
            assert response.headers["pragma"] == "no-cache"
        events = await wait_for_events(redis, settings, 2)
    assert len(events) == 2
    for event in events:
        assert (event.kind, event.channel, event.message_id, event.profile_id) == ("opened", "email", message_id, 7)
        assert event.link_index == -1
        assert (event.ua_class, event.ua_family) == ("webkit", "ios-mail")  # iOS Mail fetching itself
        assert event.ip_prefix == "203.0.113.0/24"
        assert len(event.id) == 16 and event.id[6] >> 4 == 7  # UUIDv7 layout
        assert before_us <= event.ts_us <= time.time_ns() // 1000
    assert events[0].id != events[1].id


async def test_click_redirects_and_records_clicked_with_the_link(settings, redis, message) -> None:
    message_id, version = message
    async with running_edge(settings) as (_app, client):
        response = await client.get(f"/c/{click_token(settings, message_id, 99, version, 1)}")
        assert response.status_code == 302
        assert response.headers["location"] == "https://shop.example.org/b"
        assert response.content == b""
        events = await wait_for_events(redis, settings, 1)
    [event] = events
    assert (event.kind, event.message_id, event.profile_id) == ("clicked", message_id, 99)
    assert (event.link_version, event.link_index) == (version, 1)


async def test_channel_comes_from_the_token(settings, redis, message) -> None:
    message_id, _ = message
    async with running_edge(settings) as (_app, client):
        await client.get(f"/o/{open_token(settings, message_id, 5, Channel.WEB_PUSH)}")
        [event] = await wait_for_events(redis, settings, 1)
    assert event.channel == "web_push"


async def test_head_gives_the_same_answer_and_an_event_marked_head(settings, redis, message) -> None:
    message_id, version = message
    async with running_edge(settings) as (_app, client):
        pixel_get = await client.get(f"/o/{open_token(settings, message_id, 1)}")
        click_get = await client.get(f"/c/{click_token(settings, message_id, 1, version, 0)}")
        await wait_for_events(redis, settings, 2)
        await redis.delete(*[k async for k in redis.scan_iter(match=f"{settings.stream_prefix}:events:*")])

        pixel_head = await client.head(f"/o/{open_token(settings, message_id, 1)}")
        click_head = await client.head(f"/c/{click_token(settings, message_id, 1, version, 0)}")
        assert (pixel_head.status_code, click_head.status_code) == (200, 302)
        assert pixel_head.headers == pixel_get.headers
        assert click_head.headers["location"] == click_get.headers["location"] == "https://example.com/a?x=1&y=%20"
        assert pixel_head.content == b""
        # Recorded, so that the verdict rules see who probes the message; the HEAD bit makes it a machine's.
        events = await wait_for_events(redis, settings, 2)
    assert sorted(e.kind for e in events) == ["clicked", "opened"]
    assert all(e.signals & signals.HEAD for e in events)


async def test_old_tokens_keep_their_version_after_new_content(settings, redis, pg) -> None:
    message_id, v1 = await create_message(pg, "email", "versions", [Link("https://example.com/old")])
    v2 = await add_version(pg, message_id, [Link("https://example.com/new"), Link("https://example.com/extra")])
    assert (v1, v2) == (1, 2)
    async with running_edge(settings) as (_app, client):
        old = await client.get(f"/c/{click_token(settings, message_id, 3, v1, 0)}")
        new = await client.get(f"/c/{click_token(settings, message_id, 3, v2, 0)}")
        extra = await client.get(f"/c/{click_token(settings, message_id, 3, v2, 1)}")
        missing = await client.get(f"/c/{click_token(settings, message_id, 3, v1, 1)}")
    assert old.headers["location"] == "https://example.com/old"
    assert new.headers["location"] == "https://example.com/new"
    assert extra.headers["location"] == "https://example.com/extra"
    assert missing.status_code == 404


async def test_link_tables_are_immutable_in_postgres(pg, message) -> None:
    message_id, _ = message
    with pytest.raises(asyncpg.RaiseError, match="immutable"):
        await pg.execute("update links set url = 'https://evil.example/' where message_id = $1", message_id)


async def test_cache_miss_goes_process_then_redis_then_postgres(settings, redis, pg) -> None:
    message_id, version = await create_message(pg, "email", "cache", [Link("https://example.com/cached")])
    token = click_token(settings, message_id, 1, version, 0)
    redis_key = link_table_key(settings.stream_prefix, message_id, version)

    async with running_edge(settings) as (app, client):
        assert (await client.get(f"/c/{token}")).status_code == 302  # Postgres, then refills Redis
        assert await redis.exists(redis_key)
        assert 0 < await redis.ttl(redis_key) <= settings.edge.link_cache_redis_ttl_s
        assert (await client.get(f"/c/{token}")).status_code == 302  # in process: no I/O
        assert (app.state.links.misses, app.state.links.hits) == (1, 1)

    # Gone from Postgres, still in Redis: a fresh process serves it from Redis.
    await pg.execute("delete from messages where id = $1", message_id)
    async with running_edge(settings) as (app, client):
        response = await client.get(f"/c/{token}")
        assert response.headers["location"] == "https://example.com/cached"

    # Gone from both: 404, and remembered as missing (no second lookup).
    await redis.delete(redis_key)
    async with running_edge(settings) as (app, client):
        assert (await client.get(f"/c/{token}")).status_code == 404
        assert (await client.get(f"/c/{token}")).status_code == 404
        assert app.state.links.misses == 2 and not app.state.links._inflight
        assert app.state.counters.unknown_links == 2


async def test_concurrent_misses_share_one_lookup(settings, redis, pg) -> None:
    message_id, version = await create_message(pg, "email", "burst", [Link("https://example.com/burst")])
    token = click_token(settings, message_id, 1, version, 0)
    async with running_edge(settings) as (app, client):
        responses = await asyncio.gather(*(client.get(f"/c/{token}") for _ in range(20)))
        assert {r.status_code for r in responses} == {302}
        assert len(app.state.links._entries) == 1


BAD_TOKENS = [
    "",
    "garbage",
    "A" * 24,
    "%00%0d%0a",
    "..%2f..%2fetc%2fpasswd",
    "https:%2F%2Fevil.example",
]


async def test_bad_tokens_give_gif_or_404_and_no_event(settings, redis, message) -> None:
    message_id, version = message
    forged = mint({1: b"not-the-real-key-0123456789"}, 1, TokenKind.CLICK, Channel.EMAIL, message_id, 1, version, 0)
    good_click = click_token(settings, message_id, 1, version, 0)
    truncated = good_click[:-4]
    wrong_kind_for_click = open_token(settings, message_id, 1)
    wrong_kind_for_pixel = good_click
    unknown_index = click_token(settings, message_id, 1, version, 57)
    unknown_message = click_token(settings, 10**12, 1, 1, 0)
    unknown_version = click_token(settings, message_id, 1, version + 40, 0)
    async with running_edge(settings) as (app, client):
        for token in [*BAD_TOKENS, forged, truncated, wrong_kind_for_pixel]:
            response = await client.get(f"/o/{token}")
            assert response.status_code == 200 and response.content == GIF, token
        for token in [
            *BAD_TOKENS,
            forged,
            truncated,
            wrong_kind_for_click,
            unknown_index,
            unknown_message,
            unknown_version,
        ]:
            response = await client.get(f"/c/{token}")
            assert response.status_code == 404, token
            assert "location" not in response.headers
            assert response.headers["content-type"].startswith("text/html")
        await assert_no_events(redis, settings)
        counters = app.state.counters
    assert counters.bad_tokens == 2 * (len(BAD_TOKENS) + 2) + 2
    assert counters.unknown_links == 3


async def test_fallback_url_is_the_only_place_a_bad_link_goes(settings, redis) -> None:
    settings = settings.replace(edge={"fallback_url": "https://www.example.com/expired"})
    async with running_edge(settings) as (_app, client):
        for token in ["garbage", "https:%2F%2Fevil.example", "A" * 24]:
            response = await client.get(f"/c/{token}?url=https://evil.example/")
            assert response.status_code == 302
            assert response.headers["location"] == "https://www.example.com/expired"
        await assert_no_events(redis, settings)


async def test_over_long_paths_are_refused_early(settings, redis, message) -> None:
    async with running_edge(settings) as (_app, client):
        for prefix in ("/o/", "/c/", "/anything/"):
            response = await client.get(prefix + "A" * settings.edge.max_path_len)
            assert response.status_code == 414
        await assert_no_events(redis, settings)


async def test_other_methods_are_refused(settings, redis, message) -> None:
    message_id, version = message
    async with running_edge(settings) as (_app, client):
        for path in (
            f"/o/{open_token(settings, message_id, 1)}",
            f"/c/{click_token(settings, message_id, 1, version, 0)}",
        ):
            response = await client.post(path)
            assert response.status_code == 405
            assert response.headers["allow"] == "GET, HEAD"
        await assert_no_events(redis, settings)


async def test_unknown_paths_are_404(settings) -> None:
    async with running_edge(settings) as (_app, client):
        assert (await client.get("/nope")).status_code == 404
        assert (await client.get("/o")).status_code == 404


async def test_health_and_ready(settings) -> None:
    async with running_edge(settings) as (_app, client):
        assert (await client.get("/health")).text == "ok"
        ready = await client.get("/ready")
        assert ready.status_code == 200
        body = ready.json()
        assert body["ready"] is True and body["events"]["mode"] == "redis"


async def test_deps_are_503_with_reasons_but_ready_stays_200_while_the_spool_has_room(settings, free_port) -> None:
    settings = settings.replace(
        redis_url=f"redis://127.0.0.1:{free_port}/0",
        database_url=f"postgresql://postgres@127.0.0.1:{free_port}/none",
        redis_timeout_s=0.2,
    )
    async with running_edge(settings) as (_app, client):
        # Hits go to the spool and nothing is lost: a load balancer must keep sending them here.
        assert (await client.get("/ready")).status_code == 200
        response = await client.get("/health/deps")
        assert response.status_code == 503
        problems = response.json()["problems"]
        assert any(p.startswith("redis:") for p in problems)
        assert any(p.startswith("postgres:") for p in problems)

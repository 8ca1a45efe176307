"""`/s/{code}`: SMS short links resolve through process, Redis and Postgres to a 302 and a click."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.rigs.edge_helpers import running_edge, stream_events, wait_for_events
from tracker.contract.keys import short_link_key
from tracker.contract.signals import HEAD
from tracker.contract.tokens import Channel, TokenKind, mint
from tracker.domain.link_tables import Link, create_message
from tracker.domain.short_links import codes_for


async def test_short_link_redirects_and_records_an_sms_click(settings, redis, pg) -> None:
    message_id, version = await create_message(
        pg, "sms", "sms", [Link("https://shop.example.com/sale"), Link("https://example.com/stop")]
    )
    codes = await codes_for(pg, message_id, version, 2, [501, 502])  # Postgres only, not cached in Redis
    code = codes[(502, 1)]
    assert 6 <= len(code) <= 8
    async with running_edge(settings) as (app, client):
        first = await client.get(f"/s/{code}")
        assert first.status_code == 302
        assert first.headers["location"] == "https://example.com/stop"
        assert await redis.exists(short_link_key(settings.stream_prefix, code))  # refilled from Postgres
        again = await client.get(f"/s/{code}")
        assert again.headers["location"] == "https://example.com/stop"
        assert app.state.short_links.hits == 1
        head = await client.head(f"/s/{codes[(501, 0)]}")
        assert head.status_code == 302 and head.headers["location"] == "https://shop.example.com/sale"
        events = await wait_for_events(redis, settings, 3)
    assert sorted((e.kind, e.channel, e.message_id, e.profile_id, e.link_version, e.link_index, e.signals & HEAD)
                  for e in events) == [  # the HEAD is recorded with its signal: a machine's (tracker.domain.verdicts)
        ("clicked", "sms", message_id, 501, version, 0, HEAD),
        ("clicked", "sms", message_id, 502, version, 1, 0),
        ("clicked", "sms", message_id, 502, version, 1, 0),
    ]  # fmt: skip


async def test_unknown_and_malformed_codes_get_404_and_no_event(settings, redis) -> None:
    async with running_edge(settings) as (app, client):
        for code in ("Zz9Zz9Z", "abc", "toolongcode1", "a.b-c_d", "%0d%0a"):
            response = await client.get(f"/s/{code}")
            assert response.status_code == 404, code
            assert "location" not in response.headers
        await asyncio.sleep(0.05)
        assert await stream_events(redis, settings) == []
        assert app.state.counters.unknown_links == 5


async def test_a_flood_of_unknown_codes_is_bounded_remembered_and_spools_no_real_opens(settings, redis) -> None:
    settings = settings.replace(edge={"short_link_max_inflight": 4})
    keys = settings.signing_keys
    opens = [mint(keys, 1, TokenKind.OPEN, Channel.EMAIL, 9, profile) for profile in range(1, 51)]
    made_up = [f"Zq{n:05d}" for n in range(400)]
    async with running_edge(settings) as (app, client):
        answers = await asyncio.gather(
            *(client.get(f"/s/{code}") for code in made_up), *(client.get(f"/o/{token}") for token in opens)
        )
        events = await wait_for_events(redis, settings, 50)
        statuses = Counter(response.status_code for response in answers[: len(made_up)])
        # Past 4 lookups in flight a miss is refused at once, not queued for Redis and Postgres.
        assert set(statuses) == {404, 503} and statuses[503] > 0, statuses
        assert app.state.counters.lookups_refused == statuses[503]
        # Real opens went to Redis, through their own connections: nothing spooled.
        assert app.state.events.spooled == 0 and not app.state.spool.path.exists()
        assert sorted(e.profile_id for e in events) == list(range(1, 51))
        # Codes found missing are remembered: here without I/O, in Redis for every other process.
        looked_up = [code for code, response in zip(made_up, answers, strict=False) if response.status_code == 404]
        assert all(app.state.short_links.missing(code) for code in looked_up)
        assert {await redis.get(short_link_key(settings.stream_prefix, code)) for code in looked_up} == {b""}
        misses = app.state.short_links.misses
        again = await asyncio.gather(*(client.get(f"/s/{code}") for code in looked_up))
        assert {response.status_code for response in again} == {404}
        assert app.state.short_links.misses == misses  # answered from memory: no fetch at all
    async with running_edge(settings) as (app, client):
        assert (await client.get(f"/s/{looked_up[0]}")).status_code == 404
        assert app.state.short_links.missing(looked_up[0])  # learnt from the Redis marker


async def test_a_code_created_after_it_was_noted_missing_in_redis_resolves(settings, redis, pg) -> None:
    message_id, version = await create_message(pg, "sms", "sms", [Link("https://shop.example.com/late")])
    code = (await codes_for(pg, message_id, version, 1, [601]))[(601, 0)]
    await redis.set(short_link_key(settings.stream_prefix, code), b"", ex=60)  # noted missing by an edge
    await codes_for(pg, message_id, version, 1, [601], redis, settings.stream_prefix)  # the renderer caches it
    async with running_edge(settings) as (_app, client):
        response = await client.get(f"/s/{code}")
    assert response.status_code == 302 and response.headers["location"] == "https://shop.example.com/late"


async def test_a_percent_escaped_code_is_not_served(settings, pg) -> None:
    message_id, version = await create_message(pg, "sms", "sms", [Link("https://shop.example.com/x")])
    code = (await codes_for(pg, message_id, version, 1, [701]))[(701, 0)]
    async with running_edge(settings) as (_app, client):
        assert (await client.get(f"/s/{code}")).status_code == 302
        escaped = await client.get(f"/s/%{ord(code[0]):02X}{code[1:]}")
    assert escaped.status_code == 404

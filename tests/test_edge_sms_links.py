"""`/s/{code}`: SMS short links resolve through process, Redis and Postgres to a 302 and a click."""

from __future__ import annotations

import asyncio

from tests.edge_helpers import running_edge, stream_events, wait_for_events
from tracker.contract.keys import short_link_key
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
        events = await wait_for_events(redis, settings, 2)
    assert [(e.kind, e.channel, e.message_id, e.profile_id, e.link_version, e.link_index) for e in events] == [
        ("clicked", "sms", message_id, 502, version, 1)
    ] * 2


async def test_unknown_and_malformed_codes_get_404_and_no_event(settings, redis) -> None:
    async with running_edge(settings) as (app, client):
        for code in ("Zz9Zz9Z", "abc", "toolongcode1", "a.b-c_d", "%0d%0a"):
            response = await client.get(f"/s/{code}")
            assert response.status_code == 404, code
            assert "location" not in response.headers
        await asyncio.sleep(0.05)
        assert await stream_events(redis, settings) == []
        assert app.state.counters.unknown_links == 5

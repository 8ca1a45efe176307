from __future__ import annotations

from tests.rigs.edge_helpers import running_edge, wait_for_events
from tracker.contract.tokens import Channel, TokenKind, mint
from tracker.domain.link_tables import Link, create_message


async def test_open_and_click(settings, redis, pg) -> None:
    message_id, version = await create_message(pg, "email", "smoke", [Link("https://example.com/a")])
    keys = settings.signing_keys
    open_token = mint(keys, 1, TokenKind.OPEN, Channel.EMAIL, message_id, 42)
    click_token = mint(keys, 1, TokenKind.CLICK, Channel.EMAIL, message_id, 42, version, 0)
    async with running_edge(settings) as (_app, client):
        r = await client.get(f"/o/{open_token}.gif")
        assert r.status_code == 200 and len(r.content) == 43
        r = await client.get(f"/c/{click_token}")
        assert r.status_code == 302 and r.headers["location"] == "https://example.com/a"
        events = await wait_for_events(redis, settings, 2)
    assert [e.kind for e in events] == ["opened", "clicked"]

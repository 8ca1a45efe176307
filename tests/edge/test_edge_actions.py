"""Push callbacks, unsubscribe and double opt-in: events through the edge, effects through the flusher."""

from __future__ import annotations

import asyncio

import pytest

from edge.responses import GIF
from tests.rigs.edge_helpers import running_edge, stream_events, wait_for_events
from tests.rigs.flusher_helpers import drain, make_message, make_profiles, make_resource
from tracker.contract.tokens import Channel, TokenKind, mint


def token(settings, kind: TokenKind, message_id: int, profile_id: int, channel: Channel = Channel.EMAIL) -> str:
    return mint(settings.signing_keys, 1, kind, channel, message_id, profile_id)


async def assert_no_events(redis, settings) -> None:
    await asyncio.sleep(0.05)
    assert await stream_events(redis, settings) == []


# -- push -----------------------------------------------------------------------------------


async def test_push_callbacks_record_delivered_opened_clicked(settings, redis) -> None:
    push = token(settings, TokenKind.PUSH, 31, 8, Channel.WEB_PUSH)
    async with running_edge(settings) as (_app, client):
        ack = await client.get(f"/p/{push}/ack")
        opened = await client.post(f"/p/{push}/open")
        clicked = await client.get(f"/p/{push}/click", params={"click_action": "archive\x07<b>"})
        events = await wait_for_events(redis, settings, 3)
    for response in (ack, opened, clicked):
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.content == b""
    assert [(e.kind, e.channel, e.message_id, e.profile_id) for e in events] == [
        ("push_delivered", "web_push", 31, 8),
        ("push_opened", "web_push", 31, 8),
        ("push_clicked", "web_push", 31, 8),
    ]
    assert events[2].data == {"action": "archive<b>"}  # control characters dropped, kept as data only


async def test_push_answers_a_gif_when_an_image_is_asked_for(settings, redis) -> None:
    push = token(settings, TokenKind.PUSH, 32, 9, Channel.APP_PUSH)
    async with running_edge(settings) as (_app, client):
        by_suffix = await client.get(f"/p/{push}/open.gif")
        by_accept = await client.get(f"/p/{push}/ack", headers={"accept": "image/webp,image/*"})
        events = await wait_for_events(redis, settings, 2)
    for response in (by_suffix, by_accept):
        assert response.status_code == 200 and response.content == GIF
    assert {e.kind for e in events} == {"push_opened", "push_delivered"}


async def test_push_preflight_and_bad_requests(settings, redis) -> None:
    push = token(settings, TokenKind.PUSH, 33, 1)
    not_push = token(settings, TokenKind.OPEN, 33, 1)
    async with running_edge(settings) as (app, client):
        preflight = await client.options(f"/p/{push}/click")
        assert preflight.status_code == 204
        assert "GET" in preflight.headers["access-control-allow-methods"]
        for path in (f"/p/{push}/explode", f"/p/{not_push}/ack", "/p/garbage/ack", f"/p/{push}"):
            response = await client.get(path)
            assert response.status_code == 404, path
            assert response.headers["access-control-allow-origin"] == "*"
        await assert_no_events(redis, settings)
        assert app.state.counters.bad_tokens == 4


# -- unsubscribe ----------------------------------------------------------------------------


async def test_unsubscribe_get_changes_nothing_post_unsubscribes(settings, redis) -> None:
    unsubscribe = token(settings, TokenKind.UNSUBSCRIBE, 41, 5)
    async with running_edge(settings) as (_app, client):
        page = await client.get(f"/u/{unsubscribe}")
        assert page.status_code == 200
        assert '<form method="post">' in page.text and "Unsubscribe</button>" in page.text
        assert '<html lang="en">' in page.text
        assert page.headers["referrer-policy"] == "no-referrer"
        await assert_no_events(redis, settings)  # a scanner's GET does nothing

        button = await client.post(f"/u/{unsubscribe}", data={"List-Unsubscribe": "One-Click"})
        one_click_multipart = await client.post(
            f"/u/{unsubscribe}", files={"List-Unsubscribe": (None, "One-Click")}
        )
        events = await wait_for_events(redis, settings, 2)
    for response in (button, one_click_multipart):
        assert response.status_code == 200
        assert "You are unsubscribed" in response.text
        assert "set-cookie" not in response.headers and "location" not in response.headers
    assert [(e.kind, e.message_id, e.profile_id) for e in events] == [("unsubscribed", 41, 5)] * 2


async def test_unsubscribe_refuses_bad_tokens_and_big_bodies(settings, redis) -> None:
    settings = settings.replace(edge={"form_max_bytes": 1024})
    unsubscribe = token(settings, TokenKind.UNSUBSCRIBE, 42, 5)
    open_token = token(settings, TokenKind.OPEN, 42, 5)
    async with running_edge(settings) as (_app, client):
        assert (await client.get(f"/u/{open_token}")).status_code == 404
        assert (await client.post("/u/forged-token-here")).status_code == 404
        big = await client.post(f"/u/{unsubscribe}", content=b"x" * 2048)
        assert big.status_code == 413
        assert (await client.put(f"/u/{unsubscribe}")).status_code == 405
        await assert_no_events(redis, settings)


# -- confirm --------------------------------------------------------------------------------


async def test_confirm_needs_the_button_and_then_leads_to_the_thank_you_page(settings, redis) -> None:
    settings = settings.replace(edge={"confirm_url": "https://www.example.com/thanks"})
    confirm = token(settings, TokenKind.CONFIRM, 51, 6)
    async with running_edge(settings) as (_app, client):
        page = await client.get(f"/cf/{confirm}")
        assert page.status_code == 200 and "Confirm</button>" in page.text
        await assert_no_events(redis, settings)
        confirmed = await client.post(f"/cf/{confirm}")
        assert confirmed.status_code == 303
        assert confirmed.headers["location"] == "https://www.example.com/thanks"
        [event] = await wait_for_events(redis, settings, 1)
    assert (event.kind, event.message_id, event.profile_id) == ("confirmed", 51, 6)


async def test_confirm_without_a_thank_you_url_shows_its_own_page(settings, redis) -> None:
    confirm = token(settings, TokenKind.CONFIRM, 52, 6)
    async with running_edge(settings) as (_app, client):
        response = await client.post(f"/cf/{confirm}")
        assert response.status_code == 200 and "confirmed" in response.text
        assert (await client.post(f"/cf/{token(settings, TokenKind.UNSUBSCRIBE, 52, 6)}")).status_code == 404
        assert len(await wait_for_events(redis, settings, 1)) == 1


# -- effects through the flusher ------------------------------------------------------------


@pytest.mark.parametrize(("route", "kind", "expected"), [("cf", TokenKind.CONFIRM, "subscribed"),
                                                          ("u", TokenKind.UNSUBSCRIBE, "unsubscribed")])  # fmt: skip
async def test_subscription_changes_reach_postgres(settings, redis, pg, route, kind, expected) -> None:
    resource = await make_resource(pg)
    message_id = await make_message(pg, resource_id=resource)
    [profile] = await make_profiles(pg, 1)
    await pg.execute(
        "insert into subscriptions (profile_id, resource_id, status) values ($1, $2, 'pending')", profile, resource
    )
    async with running_edge(settings) as (_app, client):
        response = await client.post(f"/{route}/{token(settings, kind, message_id, profile)}")
        assert response.status_code == 200
        await wait_for_events(redis, settings, 1)
    await drain(settings)
    status = await pg.fetchval(
        "select status from subscriptions where profile_id = $1 and resource_id = $2", profile, resource
    )
    assert status == expected

"""Rendering per recipient: every link tracked with its own token, pixels, unsubscribe, headers."""

from __future__ import annotations

import re

import pytest

from tests.rigs.edge_helpers import running_edge
from tracker.contract.tokens import Channel, Keyring, TokenKind, mint, verify
from tracker.domain.errors import InputError
from tracker.domain.messages import register_message, register_version
from tracker.domain.render import Renderer, TemplateCache, load_template, render_message
from tracker.domain.short_links import resolve
from tracker.domain.token_batches import MessageTokens

HTML = """<!doctype html>
<html><body>
<h1>Spring sale</h1>
<a href="https://shop.example/sale?utm=mail&amp;id=7" update-clicked_link="true">Shop</a>
<a href="https://shop.example/sale?utm=mail&amp;id=7" subscribe-to="{resource}">Shop and subscribe</a>
<a href="mailto:help@shop.example">Help</a>
<p><a href="{{{{unsubscribe_url}}}}">Unsubscribe</a></p>
</body></html>"""


@pytest.fixture
async def email_list(pg) -> int:
    await pg.execute(
        "insert into profile_fields (name, type) values ('clicked_link', 'boolean') on conflict do nothing"
    )
    return await pg.fetchval("insert into resources (name, channel) values ('Newsletter', 'email') returning id")


@pytest.fixture
async def profiles(pg) -> list[int]:
    rows = await pg.fetch("insert into profiles (fields) select '{}'::jsonb from generate_series(1, 3) returning id")
    return [row["id"] for row in rows]


def test_batch_tokens_are_the_tokens_mint_makes() -> None:
    keys = {1: b"k" * 20, 7: b"z" * 80}
    for key_id in keys:
        for message_id, profile_id in [(0, 0), (1, 2), (123_456, 2**64 - 1), (2**40, 77)]:
            tokens = MessageTokens(Keyring(keys), key_id, Channel.SMS, message_id, 5, 40)
            assert tokens.clicks(profile_id) == [
                mint(keys, key_id, TokenKind.CLICK, Channel.SMS, message_id, profile_id, 5, i) for i in range(40)
            ]
            for kind in set(TokenKind) - {TokenKind.CLICK}:
                assert tokens.token(kind, profile_id) == mint(keys, key_id, kind, Channel.SMS, message_id, profile_id)


async def test_each_recipient_gets_their_own_tracked_links_pixels_and_headers(
    settings, pg, email_list, profiles
) -> None:
    registered = await register_message(pg, "email", "sale", HTML.format(resource=email_list), email_list)
    info, rendered = await render_message(pg, settings, registered.message_id, profiles)
    assert info.version == registered.version == 1
    keys = Keyring(settings.signing_keys)
    base = re.escape(settings.public_url)
    for recipient, profile_id in zip(rendered, profiles, strict=True):
        assert recipient.profile_id == profile_id
        body = recipient.body
        assert "update-clicked_link" not in body and "subscribe-to" not in body
        assert 'href="mailto:help@shop.example"' in body
        clicks = re.findall(rf'href="{base}/c/([\w-]+)"', body)
        assert [verify(keys, token)[:7] for token in clicks] == [
            (TokenKind.CLICK, Channel.EMAIL, registered.message_id, profile_id, 1, 1, 0),
            (TokenKind.CLICK, Channel.EMAIL, registered.message_id, profile_id, 1, 1, 1),
        ]
        [open_token] = re.findall(rf'<img src="{base}/o/([\w-]+)\.gif"', body)
        [read_token] = re.findall(rf'<img src="{base}/r/([\w-]+)"', body)
        [unsubscribe] = re.findall(rf'href="({base}/u/[\w-]+)"', body)
        assert verify(keys, open_token)[0] == TokenKind.OPEN and verify(keys, read_token)[0] == TokenKind.READ
        assert body.index(read_token) < body.index("</body></html>")
        assert recipient.headers["List-Unsubscribe"] == f"<{unsubscribe}>"
        assert recipient.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        ref = verify(keys, recipient.headers["X-Tracker-Ref"])
        assert (ref[0], ref[2], ref[3]) == (TokenKind.REF, registered.message_id, profile_id)
    assert len({r.body for r in rendered}) == len(profiles)


async def test_rendered_links_redirect_through_the_edge_to_the_right_urls(settings, pg, email_list, profiles) -> None:
    html = '<a href="https://a.example/one">1</a><a href="https://b.example/two?x=1&amp;y=2">2</a>'
    registered = await register_message(pg, "email", "edge", html)
    _info, [rendered] = await render_message(pg, settings, registered.message_id, profiles[:1])
    paths = re.findall(rf'href="{re.escape(settings.public_url)}(/c/[\w-]+)"', rendered.body)
    async with running_edge(settings) as (_app, client):
        locations = [(await client.get(path)).headers["location"] for path in paths]
    assert locations == ["https://a.example/one", "https://b.example/two?x=1&y=2"]


async def test_a_new_version_renders_its_own_links_and_old_versions_stay(settings, pg, profiles) -> None:
    first = await register_message(pg, "email", "v", '<a href="https://old.example/">x</a>')
    second = await register_version(pg, first.message_id, '<a href="https://new.example/">x</a>')
    assert second.version == 2
    cache = TemplateCache()
    _, [now] = await render_message(pg, settings, first.message_id, profiles[:1], cache=cache)
    _, [before] = await render_message(pg, settings, first.message_id, profiles[:1], version=1, cache=cache)
    keys = Keyring(settings.signing_keys)
    token_now = re.search(r"/c/([\w-]+)", now.body).group(1)
    token_before = re.search(r"/c/([\w-]+)", before.body).group(1)
    assert verify(keys, token_now)[5] == 2 and verify(keys, token_before)[5] == 1


async def test_sms_links_become_short_links_that_resolve_to_recipient_and_link(settings, pg, redis, profiles) -> None:
    registered = await register_message(pg, "sms", "sms", "Sale today https://shop.example/sale and https://x.example/")
    _info, rendered = await render_message(pg, settings, registered.message_id, profiles, redis=redis)
    seen = set()
    for recipient in rendered:
        codes = re.findall(rf"{re.escape(settings.public_url)}/s/([0-9A-Za-z]{{6,8}})\b", recipient.body)
        assert len(codes) == 2
        assert recipient.body.startswith("Sale today ") and len(recipient.body) < 100
        for index, code in enumerate(codes):
            link = await resolve(pg, code)
            assert (link.message_id, link.version, link.link_index, link.profile_id) == (
                registered.message_id, 1, index, recipient.profile_id
            )  # fmt: skip
            seen.add(code)
        # The ref for the gateway's delivery reports names this message and recipient on the SMS channel.
        ref = verify(Keyring(settings.signing_keys), recipient.headers["X-Tracker-Ref"])
        assert ref[:4] == (TokenKind.REF, Channel.SMS, registered.message_id, recipient.profile_id)
    assert len(seen) == 2 * len(profiles)
    # A second render for the same recipients hands out the same codes.
    _info, again = await render_message(pg, settings, registered.message_id, profiles, redis=redis)
    assert [r.body for r in again] == [r.body for r in rendered]


async def test_push_recipients_get_ack_open_and_click_urls(settings, pg, profiles) -> None:
    registered = await register_message(pg, "app_push", "push", '{"title": "Hi"}')
    _info, [rendered] = await render_message(pg, settings, registered.message_id, profiles[:1])
    token = rendered.push_urls["ack"].removeprefix(f"{settings.public_url}/p/").removesuffix("/ack")
    assert rendered.push_urls == {
        "ack": f"{settings.public_url}/p/{token}/ack",
        "open": f"{settings.public_url}/p/{token}/open",
        "click": f"{settings.public_url}/p/{token}/click",
    }
    kind, channel, message_id, profile_id = verify(Keyring(settings.signing_keys), token)[:4]
    assert (kind, channel, message_id, profile_id) == (
        TokenKind.PUSH,
        Channel.APP_PUSH,
        registered.message_id,
        profiles[0],
    )
    assert rendered.body == '{"title": "Hi"}'


async def test_link_attributes_are_checked_when_the_message_is_registered(pg, email_list) -> None:
    await pg.execute("insert into profile_fields (name, type) values ('score', 'number') on conflict do nothing")
    cases = {
        '<a href="https://a.example/" update-nope="1">x</a>': "unknown_field",
        '<a href="https://a.example/" update-score="lots">x</a>': "invalid_link_attribute",
        '<a href="https://a.example/" subscribe-to="999999">x</a>': "unknown_resource",
        '<a href="https://a.example/" subscribe-to="abc">x</a>': "invalid_link_attribute",
        '<a href="{{unsubscribe_url}}">u</a>': "placeholder_without_resource",
    }
    before = await pg.fetchval("select count(*) from messages")
    for html, code in cases.items():
        with pytest.raises(InputError) as error:
            await register_message(pg, "email", "bad", html)
        assert error.value.code == code, html
    assert await pg.fetchval("select count(*) from messages") == before


async def test_render_time_compilation_refuses_a_version_whose_links_differ(settings, pg, profiles) -> None:
    from tracker.domain.link_tables import Link, create_message

    message_id, _ = await create_message(
        pg, "email", "odd", [Link("https://other.example/")], content="<p>no links</p>"
    )
    with pytest.raises(InputError, match="stored links differ"):
        await load_template(pg, message_id)


async def test_one_renderer_serves_many_recipients_from_one_compiled_template(settings, pg) -> None:
    registered = await register_message(pg, "email", "many", '<a href="https://a.example/">a</a>' * 30)
    info, template = await load_template(pg, registered.message_id)
    renderer = Renderer(settings, template, info)
    bodies = [r.body for r in renderer.emails(range(1, 501))]
    assert len(set(bodies)) == 500 and all(body.count("/c/") == 30 for body in bodies)

"""The website pixel: its script, its collect endpoint, and the ref a click hands to the landing page."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.rigs.edge_helpers import real_edge, running_edge, stream_events, wait_for_events
from tracker.contract.tokens import Channel, TokenKind, mint, parse
from tracker.domain.link_tables import Link, create_message

SITE = {"edge": {"site_keys": "shop-main,blog", "site_link_param": "_ak"}}


def hit(**fields) -> bytes:
    return json.dumps({"site": "shop-main", "action": "signup", "url": "https://shop.example.com/a", **fields}).encode()


async def test_script_is_small_cacheable_and_knows_the_parameter(settings) -> None:
    async with running_edge(settings.replace(**SITE)) as (_app, client):
        script = await client.get("/ak.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("application/javascript")
    assert "max-age=3600" in script.headers["cache-control"]
    assert len(script.content) < 4096
    assert '"_ak"' in script.text and "sendBeacon" in script.text


async def test_beacon_post_and_image_get_record_site_actions(settings, redis) -> None:
    settings = settings.replace(**SITE)
    ref = mint(settings.signing_keys, 1, TokenKind.REF, Channel.SITE, 77, 4242)
    async with running_edge(settings) as (_app, client):
        beacon = await client.post("/ak/e", content=hit(ref=ref, props={"plan": "gold", "seats": 3}),
                                   headers={"content-type": "text/plain;charset=UTF-8"})  # fmt: skip
        image = await client.get("/ak/e", params={"d": hit(action="page_view").decode()})
        events = await wait_for_events(redis, settings, 2)
    assert beacon.status_code == 204 and beacon.headers["access-control-allow-origin"] == "*"
    assert image.status_code == 200 and image.headers["content-type"] == "image/gif"
    signup, view = events
    assert (signup.kind, signup.channel, signup.message_id, signup.profile_id) == ("site_action", "site", 77, 4242)
    assert signup.data == {"site": "shop-main", "action": "signup", "url": "https://shop.example.com/a",
                           "props": {"plan": "gold", "seats": 3}}  # fmt: skip
    assert (view.message_id, view.profile_id, view.data["action"]) == (0, 0, "page_view")  # anonymous


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (hit(site="someone-else"), 400),
        (hit(action="<script>"), 400),
        (hit(url="javascript:alert(1)"), 400),
        (hit(props={f"p{i}": i for i in range(21)}), 400),
        (hit(props={"long": "x" * 300}), 400),
        (hit(props={"nested": {"a": 1}}), 400),
        (hit(extra="field"), 400),
        (hit(props={f"pad{i}": "x" * 250 for i in range(12)}, url="https://e.com/" + "y" * 2000), 413),
    ],
)
async def test_bad_events_are_refused_and_not_recorded(settings, redis, body: bytes, status: int) -> None:
    async with running_edge(settings.replace(**SITE)) as (_app, client):
        response = await client.post("/ak/e", content=body)
        assert response.status_code == status
        assert response.json()["error"]["code"] in ("bad_event", "payload_too_large")
        await asyncio.sleep(0.05)
        assert await stream_events(redis, settings) == []


async def test_a_forged_ref_keeps_the_action_but_not_the_profile(settings, redis) -> None:
    forged = mint({1: b"not-the-real-key-0123456789"}, 1, TokenKind.REF, Channel.SITE, 77, 4242)
    async with running_edge(settings.replace(**SITE)) as (app, client):
        assert (await client.post("/ak/e", content=hit(ref=forged))).status_code == 204
        [event] = await wait_for_events(redis, settings, 1)
        assert app.state.counters.bad_tokens == 1
    assert (event.message_id, event.profile_id) == (0, 0)


async def test_the_pixel_is_off_without_site_keys(settings) -> None:
    async with running_edge(settings) as (_app, client):
        assert (await client.get("/ak.js")).status_code == 404
        assert (await client.post("/ak/e", content=hit())).status_code == 404


async def test_clicks_hand_a_signed_ref_to_the_landing_page(settings, pg) -> None:
    settings = settings.replace(**SITE)
    message_id, version = await create_message(
        pg, "email", "landing", [Link("https://shop.example.com/p?x=1#reviews"), Link("https://shop.example.com/")]
    )
    async with running_edge(settings) as (_app, client):
        with_query = await client.get(
            f"/c/{mint(settings.signing_keys, 1, TokenKind.CLICK, Channel.EMAIL, message_id, 9, version, 0)}"
        )
        plain = await client.get(
            f"/c/{mint(settings.signing_keys, 1, TokenKind.CLICK, Channel.EMAIL, message_id, 9, version, 1)}"
        )
    location = with_query.headers["location"]
    assert location.startswith("https://shop.example.com/p?x=1&_ak=") and location.endswith("#reviews")
    ref = parse_qs(urlsplit(location).query)["_ak"][0]
    assert parse(settings.signing_keys, ref)[:4] == (TokenKind.REF, Channel.SITE, message_id, 9)
    assert plain.headers["location"].startswith("https://shop.example.com/?_ak=")


# -- a real browser --------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _Landing(BaseHTTPRequestHandler):
    edge = ""

    def do_GET(self) -> None:
        page = (
            "<!doctype html><title>Landing</title>"
            f"<script src='{self.edge}/ak.js' data-site='shop-main'></script>"
            "<script>setTimeout(function () { ak.track('add_to_cart', {sku: 'A-1', qty: 2}); }, 50);</script>"
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it")
async def test_page_view_and_custom_action_from_headless_chromium(settings, redis, free_port, tmp_path) -> None:
    settings = settings.replace(**SITE)
    ref = mint(settings.signing_keys, 1, TokenKind.REF, Channel.SITE, 88, 515)
    handler = type("Landing", (_Landing,), {"edge": f"http://127.0.0.1:{free_port}"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    landing = f"http://127.0.0.1:{server.server_port}/product?_ak={ref}"
    try:
        async with real_edge(settings, free_port, TRACKER_SITE_KEYS="shop-main", TRACKER_SITE_LINK_PARAM="_ak"):
            browser = await asyncio.create_subprocess_exec(
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=3000", "--dump-dom", landing,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            dom, _ = await asyncio.wait_for(browser.communicate(), 60)
            assert b"Landing" in dom
            events = await wait_for_events(redis, settings, 2, timeout=10)
    finally:
        server.shutdown()
    actions = sorted((e.data["action"], e.message_id, e.profile_id) for e in events)
    assert actions == [("add_to_cart", 88, 515), ("page_view", 88, 515)]
    cart = next(e for e in events if e.data["action"] == "add_to_cart")
    assert cart.data["props"] == {"sku": "A-1", "qty": 2}
    assert cart.data["url"] == landing
    assert (cart.ua_class, cart.ua_family) == ("headless", "headless-chrome")  # the HeadlessChrome UA


async def test_an_email_or_sms_ref_does_not_tie_site_actions_to_a_profile(settings, redis) -> None:
    settings = settings.replace(**SITE)
    # Refs recipients and providers see: message headers and delivery callbacks.
    foreign = [
        mint(settings.signing_keys, 1, TokenKind.REF, channel, 77, 4242) for channel in (Channel.EMAIL, Channel.SMS)
    ]
    async with running_edge(settings) as (app, client):
        for ref in foreign:
            assert (await client.post("/ak/e", content=hit(ref=ref))).status_code == 204
        events = await wait_for_events(redis, settings, 2)
        assert app.state.counters.bad_tokens == 2
    assert [(e.kind, e.channel, e.message_id, e.profile_id) for e in events] == [("site_action", "site", 0, 0)] * 2

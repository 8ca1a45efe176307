"""The pages a recipient sees at /u/ and /cf/: language, list and address, undo, preferences, branding."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from edge.pages.language import SHIPPED, load_strings, pick_language
from edge.pages.mask import mask_email, mask_phone
from tests.rigs.cdp_pipe import Chromium, Tab, png_size_and_variety
from tests.rigs.edge_helpers import edge_env, running_edge, stream_events, wait_for_events, wait_healthy
from tests.rigs.flusher_helpers import make_message, make_profiles
from tests.rigs.recipient_pages_app import wire_pages
from tracker.config import SettingsError
from tracker.config.pages import PagesSettings
from tracker.contract.tokens import Channel, TokenKind, mint

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def token(settings, kind: TokenKind, message_id: int, profile_id: int, channel=Channel.EMAIL, **extra) -> str:
    return mint(settings.signing_keys, 1, kind, channel, message_id, profile_id, **extra)


async def make_list(pg, name: str) -> int:
    return await pg.fetchval("insert into resources (name, channel) values ($1, 'email') returning id", name)


async def subscribe(pg, profile_id: int, resource_id: int, status: str) -> None:
    insert = "insert into subscriptions (profile_id, resource_id, status) values ($1, $2, $3)"
    await pg.execute(insert, profile_id, resource_id, status)


async def statuses(pg, profile_id: int) -> dict[int, str]:
    rows = await pg.fetch("select resource_id, status from subscriptions where profile_id = $1", profile_id)
    return {row["resource_id"]: row["status"] for row in rows}


async def recipient(pg, list_name: str = "Weekly <b>Digest</b>") -> tuple[int, int, int]:
    """A list, a message sent to it, and a subscribed profile: (resource, message, profile)."""
    resource = await make_list(pg, list_name)
    message = await make_message(pg, resource_id=resource)
    [profile] = await make_profiles(pg, 1)
    await pg.execute("update profiles set email = $2 where id = $1", profile, f"jane.{profile}@example.com")
    await subscribe(pg, profile, resource, "subscribed")
    return resource, message, profile


def pages_edge(settings, **pages):
    """The in-process edge with pages that read through its Postgres pool."""
    edge = running_edge(settings)

    class _Wired:
        async def __aenter__(self):
            app, client = await edge.__aenter__()
            wire_pages(app, PagesSettings().replace(**pages))
            return app, client

        async def __aexit__(self, *exc):
            return await edge.__aexit__(*exc)

    return _Wired()


# -- language and masks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("ru-RU,ru;q=0.9,en;q=0.8", "ru"),
        ("fr-CA, fr;q=0.9, en;q=0.1, ru;q=0.2", "ru"),  # quality, not order, decides
        ("en;q=0.5, ru;q=0.5", "en"),  # equal quality: the order given
        ("ru;q=0, *", "en"),  # q=0 refuses a language; * is the default
        ("ru;q=bogus, en;q=0.3", "en"),  # a malformed weight drops that range only
        ("de", "en"),
        ("", "en"),
    ],
)
def test_language_follows_accept_language_quality(header: str, expected: str) -> None:
    assert pick_language(header, {"en", "ru"}, "en") == expected


def test_addresses_are_masked() -> None:
    assert mask_email("jane.doe@example.com") == "j***@example.com"
    assert mask_phone("+447700900134") == "+44 ****** **34"
    assert "0900" not in mask_phone("+447700900134")
    assert mask_email("not-an-address") == "***"


def test_every_shipped_language_has_every_english_word() -> None:
    shipped = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in SHIPPED.glob("*.json")}
    assert set(shipped) >= {"en", "ru"}
    for language, words in shipped.items():
        assert set(words) == set(shipped["en"]), language
    assert set(load_strings(SHIPPED)) == set(shipped)


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "environ",
    [
        {"TRACKER_BRAND_COLOR": "red"},
        {"TRACKER_BRAND_COLOR": "#fff;}</style><script>alert(1)</script>"},
        {"TRACKER_BRAND_LOGO_URL": "javascript:alert(1)"},
        {"TRACKER_BRAND_LOGO_URL": 'https://cdn.example.com/a.png" onerror="alert(1)'},
        {"TRACKER_BRAND_LOGO_URL": "https://cdn.example.com/a.png; script-src *"},
        {"TRACKER_PAGES_DIR": "/nonexistent/pages"},
        {"TRACKER_UNSUBSCRIBE_MAX_AGE_DAYS": "7"},  # unsubscribe links must outlive the send by far
    ],
)
def test_brand_and_folder_settings_are_checked(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=next(iter(environ))):
        PagesSettings.from_env(environ)


def test_good_brand_settings_are_read() -> None:
    pages = PagesSettings.from_env(
        {"TRACKER_BRAND_COLOR": "#0A7D53", "TRACKER_BRAND_LOGO_URL": "https://cdn.example.com/logo.svg",
         "TRACKER_BRAND_NAME": " Acme Mail "}
    )  # fmt: skip
    assert (pages.brand_colour, pages.brand_name) == ("#0a7d53", "Acme Mail")


# -- the pages over HTTP --------------------------------------------------------------------


async def test_unsubscribe_page_names_list_and_address_in_the_chosen_language(settings, redis, pg) -> None:
    _resource, message, profile = await recipient(pg)
    path = f"/u/{token(settings, TokenKind.UNSUBSCRIBE, message, profile)}"
    async with pages_edge(settings, brand_name="Acme <Mail>", brand_colour="#0a7d53") as (_app, client):
        russian = await client.get(path, headers={"accept-language": "ru-RU,ru;q=0.9,en;q=0.8"})
        english = await client.get(path, headers={"accept-language": "de, en;q=0.5"})
        await asyncio.sleep(0.05)
        assert await stream_events(redis, settings) == []  # showing the page records nothing
    assert russian.status_code == english.status_code == 200
    assert '<html lang="ru">' in russian.text and "Отписаться</button>" in russian.text
    assert russian.headers["content-language"] == "ru"
    assert '<html lang="en">' in english.text and "Unsubscribe</button>" in english.text
    for page in (russian, english):
        assert "Weekly &lt;b&gt;Digest&lt;/b&gt;" in page.text  # the list's name, escaped
        assert "j***@example.com" in page.text and f"jane.{profile}" not in page.text
        assert "Acme &lt;Mail&gt;" in page.text and "--brand: #0a7d53" in page.text
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "form-action 'self'" in page.headers["content-security-policy"]


async def test_unsubscribe_then_undo_records_both_through_the_event_stream(settings, redis, pg) -> None:
    _resource, message, profile = await recipient(pg)
    path = f"/u/{token(settings, TokenKind.UNSUBSCRIBE, message, profile)}"
    async with pages_edge(settings) as (_app, client):
        done = await client.post(path, data={"List-Unsubscribe": "One-Click"})
        undone = await client.post(path, data={"action": "resubscribe"})
        one_click = await client.post(path, files={"List-Unsubscribe": (None, "One-Click")})
        events = await wait_for_events(redis, settings, 3)
    assert done.status_code == undone.status_code == one_click.status_code == 200
    assert "You are unsubscribed" in done.text and 'name="action" value="resubscribe"' in done.text
    assert "Weekly &lt;b&gt;Digest" in done.text and "/preferences" in done.text
    assert "You are subscribed again" in undone.text
    assert "location" not in one_click.headers and "set-cookie" not in one_click.headers
    assert [(e.kind, e.message_id, e.profile_id) for e in events] == [
        ("unsubscribed", message, profile), ("subscribed", message, profile), ("unsubscribed", message, profile)
    ]  # fmt: skip


async def test_preferences_list_every_subscription_and_toggle_by_post_only(settings, redis, pg) -> None:
    weekly, message, profile = await recipient(pg, "Weekly digest")
    offers, alerts, not_mine = [await make_list(pg, name) for name in ("Offers", "Alerts", "Someone else's")]
    await subscribe(pg, profile, offers, "unsubscribed")
    await subscribe(pg, profile, alerts, "pending")
    path = f"/u/{token(settings, TokenKind.UNSUBSCRIBE, message, profile)}/preferences"
    before = await statuses(pg, profile)
    async with pages_edge(settings) as (_app, client):
        page = await client.get(path, params={"resource": weekly, "subscribe": "0"})  # a GET never acts
        assert await statuses(pg, profile) == before
        off = await client.post(path, data={"resource": str(weekly), "subscribe": "0"})
        on = await client.post(path, data={"resource": str(offers), "subscribe": "1"})
        pending = await client.post(path, data={"resource": str(alerts), "subscribe": "1"})
        stranger = await client.post(path, data={"resource": str(not_mine), "subscribe": "1"})
        bad = await client.post(path, data={"resource": "1 or 1=1", "subscribe": "1"})
        await asyncio.sleep(0.05)
        assert await stream_events(redis, settings) == []
    assert page.status_code == 200
    for name in ("Weekly digest", "Offers", "Alerts"):
        assert name in page.text
    assert "Someone else" not in page.text
    assert f'data-resource="{weekly}" data-status="subscribed"' in page.text
    assert off.status_code == on.status_code == 200 and "Your choice is saved." in off.text
    assert f'data-resource="{weekly}" data-status="unsubscribed"' in off.text
    assert bad.status_code == 400 and pending.status_code == stranger.status_code == 200
    # Only the profile's own subscriptions change, and a pending double opt-in stays pending.
    assert await statuses(pg, profile) == {weekly: "unsubscribed", offers: "subscribed", alerts: "pending"}


async def test_a_failed_lookup_still_gives_a_working_page(settings, redis, pg) -> None:
    _resource, message, profile = await recipient(pg)
    settings = settings.replace(database_url="postgresql://postgres@127.0.0.1:1/nothing")  # nothing listens
    unsubscribe = f"/u/{token(settings, TokenKind.UNSUBSCRIBE, message, profile)}"
    async with pages_edge(settings) as (app, client):
        page = await client.get(unsubscribe)
        done = await client.post(unsubscribe)
        preferences = await client.get(f"{unsubscribe}/preferences")
        toggle = await client.post(f"{unsubscribe}/preferences", data={"resource": "1", "subscribe": "0"})
        confirm = await client.get(f"/cf/{token(settings, TokenKind.CONFIRM, message, profile)}")
        [event] = await wait_for_events(redis, settings, 1)
        assert app.state.counters.lookup_errors >= 4
    assert page.status_code == done.status_code == preferences.status_code == confirm.status_code == 200
    assert "Unsubscribe</button>" in page.text and "Weekly" not in page.text and "j***" not in page.text
    assert "You are unsubscribed" in done.text and (event.kind, event.profile_id) == ("unsubscribed", profile)
    assert "cannot be shown right now" in preferences.text
    assert toggle.status_code == 503 and "could not be saved" in toggle.text


async def test_confirm_page_names_the_list_and_thanks_in_the_language_asked(settings, redis, pg) -> None:
    _resource, message, profile = await recipient(pg, "Product news")
    path = f"/cf/{token(settings, TokenKind.CONFIRM, message, profile)}"
    async with pages_edge(settings) as (_app, client):
        page = await client.get(path, headers={"accept-language": "ru"})
        thanks = await client.post(path, headers={"accept-language": "ru"})
        [event] = await wait_for_events(redis, settings, 1)
    assert '<html lang="ru">' in page.text and "Product news" in page.text and "Подтвердить</button>" in page.text
    assert thanks.status_code == 200 and "Подписка подтверждена" in thanks.text
    assert (event.kind, event.message_id, event.profile_id) == ("confirmed", message, profile)


async def test_a_thank_you_url_is_allowed_as_the_confirm_form_s_destination(settings, pg) -> None:
    settings = settings.replace(edge={"confirm_url": "https://www.example.com/thanks"})
    path = f"/cf/{token(settings, TokenKind.CONFIRM, 1, 1)}"
    async with pages_edge(settings) as (_app, client):
        page = await client.get(path)
    # Chromium applies form-action to the 303 after the POST too.
    assert "form-action 'self' https://www.example.com;" in page.headers["content-security-policy"]


async def test_bad_links_get_the_branded_404_page(settings, redis) -> None:
    async with pages_edge(settings, brand_name="Acme Mail") as (app, client):
        forged = await client.get("/u/forged-token-here", headers={"accept-language": "ru"})
        wrong_kind = await client.post(f"/cf/{token(settings, TokenKind.UNSUBSCRIBE, 1, 1)}")
        unknown_page = await client.get(f"/u/{token(settings, TokenKind.UNSUBSCRIBE, 1, 1)}/elsewhere")
        await asyncio.sleep(0.05)
        assert await stream_events(redis, settings) == []
        assert app.state.counters.bad_tokens == 3
    assert forged.status_code == wrong_kind.status_code == unknown_page.status_code == 404
    assert '<html lang="ru">' in forged.text and "Ссылка недействительна" in forged.text
    assert "Acme Mail" in wrong_kind.text and "Link not valid" in wrong_kind.text


async def test_a_bad_click_or_sms_link_gets_the_same_page_in_the_recipients_language_and_brand(
    settings, redis
) -> None:
    settings = settings.replace(pages={"brand_name": "Acme Mail", "brand_colour": "#c00"})
    unknown_link = mint(settings.signing_keys, 1, TokenKind.CLICK, Channel.EMAIL, 10**12, 1, 1, 0)
    russian = {"accept-language": "ru-RU,ru;q=0.9,en;q=0.5"}
    async with running_edge(settings) as (app, client):
        forged = await client.get("/c/forged-token-here?url=https://evil.example/", headers=russian)
        unknown = await client.get(f"/c/{unknown_link}")
        head = await client.head("/c/forged-token-here", headers=russian)
        sms = await client.get("/s/Zz9Zz9", headers=russian)
        await asyncio.sleep(0.05)
        assert await stream_events(redis, settings) == []
        assert (app.state.counters.bad_tokens, app.state.counters.unknown_links) == (2, 2)
    for response in (forged, unknown, head, sms):
        assert response.status_code == 404 and "location" not in response.headers
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert "no-store" in response.headers["cache-control"]
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert forged.headers["content-language"] == sms.headers["content-language"] == "ru"
    assert '<html lang="ru">' in forged.text and "Ссылка недействительна" in forged.text
    assert "Acme Mail" in forged.text and "--brand: #c00" in forged.text and "evil.example" not in forged.text
    assert unknown.headers["content-language"] == "en" and "Link not valid" in unknown.text
    assert head.content == b"" and head.headers["content-length"] == forged.headers["content-length"]
    assert sms.text == forged.text


async def test_old_links_show_the_expired_page_and_record_nothing(settings, redis, pg) -> None:
    month_ago = int(time.time()) - 31 * 86400
    old_confirm = token(settings, TokenKind.CONFIRM, 1, 1, issued_at=month_ago)
    old_unsubscribe = token(settings, TokenKind.UNSUBSCRIBE, 1, 1, issued_at=month_ago)
    async with pages_edge(settings, confirm_max_age_days=30, unsubscribe_max_age_days=60) as (_app, client):
        expired = await client.post(f"/cf/{old_confirm}")
        still_good = await client.post(f"/u/{old_unsubscribe}")  # within its 60 days
        [event] = await wait_for_events(redis, settings, 1)
    assert expired.status_code == 410 and "This link has expired" in expired.text
    assert still_good.status_code == 200 and event.kind == "unsubscribed"


async def test_operator_templates_and_strings_win_over_the_shipped_ones(settings, tmp_path) -> None:
    templates, strings = tmp_path / "templates", tmp_path / "strings"
    templates.mkdir()
    strings.mkdir()
    (templates / "invalid.html").write_text(
        '{% extends "base.html" %}{% block content %}<h1 id="ours">{{ t.invalid_title }}</h1>{% endblock %}'
    )
    (strings / "de.json").write_text(json.dumps({"invalid_title": "Link ungültig"}), encoding="utf-8")
    (strings / "en.json").write_text(json.dumps({"unsubscribe_button": "Stop these emails"}), encoding="utf-8")
    pages = {"templates_dir": templates, "strings_dir": strings}
    async with pages_edge(settings, **pages) as (_app, client):
        german = await client.get("/u/forged-token-here", headers={"accept-language": "de-DE"})
        english = await client.get(f"/u/{token(settings, TokenKind.UNSUBSCRIBE, 1, 1)}")
        german_ask = await client.get(
            f"/u/{token(settings, TokenKind.UNSUBSCRIBE, 1, 1)}", headers={"accept-language": "de"}
        )
    assert '<html lang="de">' in german.text and '<h1 id="ours">Link ungültig</h1>' in german.text
    assert "Stop these emails</button>" in english.text
    assert "Stop these emails</button>" in german_ask.text  # words German lacks come from English


# -- a real browser --------------------------------------------------------------------------


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it")
async def test_pages_in_headless_chromium_at_phone_and_desktop_widths(settings, redis, pg, free_port, tmp_path):
    _weekly, message, profile = await recipient(pg, "Weekly digest")
    offers = await make_list(pg, "Offers and events")
    await subscribe(pg, profile, offers, "subscribed")
    unsubscribe = token(settings, TokenKind.UNSUBSCRIBE, message, profile)
    confirm = token(settings, TokenKind.CONFIRM, message, profile)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    env = edge_env(settings, TRACKER_BRAND_NAME="Acme Mail", TRACKER_BRAND_COLOR="#0a7d53",
                   PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))  # fmt: skip
    os.makedirs(env["PROMETHEUS_MULTIPROC_DIR"])
    server = subprocess.Popen([sys.executable, "-m", "tests.rigs.recipient_pages_app", str(free_port)], env=env,
                              stdout=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{free_port}"
    browser = None
    try:
        await wait_healthy(base)
        browser = Chromium(CHROMIUM, str(tmp_path / "chromium"))

        def save(tab: Tab, name: str) -> None:
            (shots / f"{name}.png").write_bytes(tab.screenshot())

        def desktop_flow() -> dict:
            tab = Tab(browser, 1280, 800, "en-GB,en;q=0.9")
            seen = {}
            tab.open(f"{base}/u/{unsubscribe}")
            seen["lang"] = tab.value("document.documentElement.lang")
            seen["list"] = tab.value("document.querySelector('.list-name').textContent")
            save(tab, "desktop-unsubscribe")
            tab.submit("form button")
            seen["after_unsubscribe"] = tab.value("document.querySelector('h1').textContent")
            save(tab, "desktop-unsubscribed")
            tab.submit("form button")  # the undo
            seen["after_undo"] = tab.value("document.querySelector('h1').textContent")
            tab.open(f"{base}/u/{unsubscribe}/preferences")
            save(tab, "desktop-preferences")
            tab.submit(f"li[data-resource='{offers}'] button")
            seen["offers"] = tab.value(f"document.querySelector(\"li[data-resource='{offers}']\").dataset.status")
            return seen

        def phone_flow() -> dict:
            tab = Tab(browser, 390, 844, "ru-RU,ru;q=0.9")
            seen = {}
            tab.open(f"{base}/u/{unsubscribe}")
            seen["lang"] = tab.value("document.documentElement.lang")
            seen["list"] = tab.value("document.querySelector('.list-name').textContent")
            save(tab, "phone-unsubscribe")
            tab.open(f"{base}/u/{unsubscribe}/preferences")
            save(tab, "phone-preferences")
            tab.open(f"{base}/cf/{confirm}")
            save(tab, "phone-confirm")
            tab.open(f"{base}/u/not-a-real-token")
            seen["bad_link"] = tab.value("document.querySelector('h1').textContent")
            save(tab, "phone-bad-link")
            return seen

        desktop = await asyncio.to_thread(desktop_flow)
        phone = await asyncio.to_thread(phone_flow)
        events = await wait_for_events(redis, settings, 2, timeout=10)
    finally:
        if browser is not None:
            browser.close()
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert desktop == {"lang": "en", "list": "Weekly digest", "after_unsubscribe": "You are unsubscribed",
                       "after_undo": "You are subscribed again", "offers": "unsubscribed"}  # fmt: skip
    assert phone == {"lang": "ru", "list": "Weekly digest", "bad_link": "Ссылка недействительна"}
    assert [(e.kind, e.message_id, e.profile_id) for e in events] == [
        ("unsubscribed", message, profile), ("subscribed", message, profile)
    ]  # fmt: skip
    assert (await statuses(pg, profile))[offers] == "unsubscribed"
    for shot in sorted(shots.glob("*.png")):
        width, height, variety = png_size_and_variety(shot.read_bytes())
        assert width == (390 if shot.name.startswith("phone") else 1280), shot.name
        assert height > 0 and variety >= 16, f"{shot.name} looks blank"
    print(f"screenshots in {shots}")

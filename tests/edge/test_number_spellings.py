"""A number in a request has one spelling, as `str()` writes it; any other is a 4xx, never a 500 or a second key.

The four requests an outside run answered with 500 (`str.isdigit()` is true for '²', `int()` then
raises), and the second spellings `int()` would read: "01" and "١" as key 1, "+1", full-width digits.
"""

from __future__ import annotations

import time
from urllib.parse import quote, urlsplit

from tests.rigs.api_helpers import running_api
from tests.rigs.flusher_helpers import make_message, make_profiles, make_resource
from tracker.domain.analytics.report_links import report_link, sign

EVENT_ID = "01890a5d-ac96-774b-bcce-b302099a8057"
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")  # digits int() reads as 0-9


def _query(url: str) -> str:
    return urlsplit(url).query


async def test_a_report_link_whose_parts_are_not_ascii_numbers_is_a_403(settings, pg) -> None:
    message = await make_message(pg)
    expires = int(time.time()) + 600
    _key_id, _, mac = sign(settings, message, expires).split(".")
    async with running_api(settings) as api:
        page = api.client.get
        assert (await page(f"/reports/messages/{message}?t=1.%C2%B2.x")).status_code == 403  # was a 500
        assert (await page(f"/reports/messages/{message}?t=1.{expires}.{mac}")).status_code == 200
        # The same signature under another spelling of key 1 or of the expiry opens nothing.
        for key_id, stamp in (("01", expires), ("١", expires), ("１", expires), ("+1", expires),
                              ("1", f"0{expires}"), ("1", f"{expires}".translate(ARABIC_INDIC))):  # fmt: skip
            answer = await page(f"/reports/messages/{message}?t={quote(f'{key_id}.{stamp}.{mac}')}")
            assert answer.status_code == 403, (key_id, stamp)
        assert (await page(f"/reports/messages/0{message}?t=1.{expires}.{mac}")).status_code == 404


async def test_a_click_map_version_that_is_not_an_ascii_number_is_a_404_page(settings, pg) -> None:
    message = await make_message(pg)
    token = _query(report_link(settings, message, "clickmap").url)
    async with running_api(settings) as api:
        clickmap = f"/reports/messages/{message}/clickmap?{token}"
        assert (await api.client.get(clickmap)).status_code == 200
        assert (await api.client.get(clickmap + "&version=1")).status_code == 200
        for version in ("%C2%B2", "01", "%D9%A1", "%EF%BC%91", "+1", "", "9" * 30):  # was a 500 for '²'
            answer = await api.client.get(f"{clickmap}&version={version}")
            assert answer.status_code == 404 and "does not exist" in answer.text, version


async def test_a_timeline_cursor_that_is_not_the_page_s_own_is_a_422(settings, pg) -> None:
    (profile,) = await make_profiles(pg, 1)
    async with running_api(settings) as api:
        for before in (f"%C2%B2_{EVENT_ID}", f"01_{EVENT_ID}", f"%D9%A1_{EVENT_ID}", f"+1_{EVENT_ID}",
                       "1_" + "x" * 36, f"1_{EVENT_ID.upper()}", f"1_{{{EVENT_ID[:34]}}}"):  # fmt: skip
            answer = await api.call("GET", f"/profiles/{profile}/events?before={before}")
            assert answer.status_code == 422 and "before" in answer.json()["error"]["message"], before  # was a 500
        assert (await api.call("GET", f"/profiles/{profile}/events?before=1_{EVENT_ID}")).status_code == 200


async def test_a_subscribe_to_attribute_that_is_not_an_ascii_id_is_a_422(settings, pg) -> None:
    resource = await make_resource(pg)
    async with running_api(settings) as api:
        for value in ("²", "01", "١", "１", "+1", "1_0", "-1", "0"):  # '²' was a 500
            html = f'<a href="https://shop.example/" subscribe-to="{value}">Shop</a>'
            answer = await api.call("POST", "/messages", json={"channel": "email", "content": html})
            assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_link_attribute", value
        html = f'<a href="https://shop.example/" subscribe-to=" {resource} ">Shop</a>'
        assert (await api.call("POST", "/messages", json={"channel": "email", "content": html})).status_code == 201


async def test_ids_and_numbers_in_api_paths_and_queries_have_one_spelling(settings, pg) -> None:
    (profile,) = await make_profiles(pg, 1)
    resource = await make_resource(pg)
    async with running_api(settings) as api:
        assert (await api.call("GET", f"/profiles/{profile}")).status_code == 200
        for spelling in (f"0{profile}", quote(str(profile).translate(ARABIC_INDIC)), f"+{profile}", "²"):
            answer = await api.client.get(f"/api/v1/profiles/{spelling}", headers=api.auth())
            assert answer.status_code == 404, spelling
        subscribers = f"/resources/{resource}/subscribers"
        for query in ("after=%D9%A0", "after=00", "limit=01", "limit=%EF%BC%95", "sendable=TRUE", "sendable=on"):
            assert (await api.call("GET", f"{subscribers}?{query}")).status_code == 422, query
        for query in ("sendable=true", "sendable=1", "sendable=no", "after=0&limit=5"):  # as the schema lists them
            assert (await api.call("GET", f"{subscribers}?{query}")).status_code == 200, query
        for query in ("limit=%C2%B2", "after=01", "limit=1_0"):
            assert (await api.call("GET", f"/messages?{query}")).status_code == 422, query

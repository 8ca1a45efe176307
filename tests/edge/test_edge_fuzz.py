"""Hypothesis feeds the token decoder, the body reader and the public routes with generated input.

The decoder's only refusal is None (no exception, ever); the body reader's only one is
BodyTooLarge; the routes answer every request with a status below 500. Where a public route
reads a number (a report link's key id and expiry, a report page's message id and version, a
preferences form's list, an IP prefix), it is drawn spelled every way (tests/rigs/number_spellings.py):
any spelling but `str()`'s is a 4xx.
"""

from __future__ import annotations

import base64
import time
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edge.forms import BodyTooLarge, read_body
from edge.request_facts import ip_prefix
from tests.rigs.edge_helpers import running_edge
from tests.rigs.flusher_helpers import make_message, make_profiles
from tests.rigs.number_spellings import FOREIGN_DIGITS, canonical, number_spellings
from tests.rigs.recipient_pages_app import wire_pages
from tracker.config.pages import PagesSettings
from tracker.contract.tokens import Channel, TokenKind, issued_at, mint, verify, verify_fresh
from tracker.domain.analytics.report_links import sign

pytestmark = pytest.mark.slow  # fuzzing: in the full run, out of the fast loop

KEYS = {1: b"fuzz-key-0123456789abcdef"}
_BOUNDED = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_token_like = st.one_of(
    st.text(max_size=120),
    st.text(alphabet=_ALPHABET + "+/=%.", min_size=12, max_size=100),
    st.binary(min_size=9, max_size=72).map(lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("=")),
)


@_BOUNDED
@given(_token_like)
def test_the_decoder_refuses_with_none_and_nothing_else(text: str) -> None:
    result = verify(KEYS, text)
    assert result is None or mint(KEYS, 1, result[0], result[1], result[2], result[3], result[5], result[6]) == text
    assert verify_fresh(KEYS, text, 86400)[0] == result or result is not None
    issued_at(text)  # reads without verifying: must not raise either


@_BOUNDED
@given(
    st.sampled_from(list(TokenKind)),
    st.sampled_from(list(Channel)),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 10),
    st.integers(0, len(_ALPHABET) - 1),
)
def test_a_changed_character_never_verifies(kind, channel, message_id, profile_id, position, replacement) -> None:
    token = mint(KEYS, 1, kind, channel, message_id, profile_id, 3, 4)
    changed = token[:position] + _ALPHABET[replacement] + token[position + 1 :]
    assert verify(KEYS, changed) is None or changed == token


@_BOUNDED
@given(
    st.lists(st.binary(max_size=300), max_size=8),
    st.one_of(st.none(), st.binary(max_size=30), st.text(alphabet="0123456789", min_size=1, max_size=6000)),
    st.integers(1, 1000),
)
@example([b"x"], "9" * 5000, 10)  # int() of that many digits raises ValueError
async def test_the_body_reader_returns_the_body_or_refuses_with_body_too_large(chunks, declared, limit) -> None:
    headers = (
        []
        if declared is None
        else [(b"content-length", declared if isinstance(declared, bytes) else declared.encode())]
    )
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    messages = messages or [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    whole = b"".join(chunks)
    try:
        body = await read_body({"headers": headers}, receive, limit)
    except BodyTooLarge:
        return
    assert body == whole and len(body) <= limit


@pytest.fixture
async def edge(settings):
    async with running_edge(settings.replace(edge={"site_keys": "shop", "site_link_param": "_ak"})) as (_app, client):
        yield client


_paths = st.text(alphabet=_ALPHABET + "+/=%.~" + FOREIGN_DIGITS, max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from(["/o/", "/c/", "/s/", "/u/", "/cf/", "/r/", "/p/"]),
    _paths,
    st.sampled_from(["GET", "POST", "HEAD"]),
    st.binary(max_size=200),
)
async def test_token_routes_never_answer_5xx(edge, prefix, rest, method, body) -> None:
    if prefix == "/r/":
        method = "HEAD"  # a held read beacon would wait; its HEAD answers at once
    response = await edge.request(method, prefix + rest, content=body if method == "POST" else None)
    assert response.status_code < 500 or (prefix == "/s/" and response.status_code == 503)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.binary(max_size=500), st.text(max_size=300).map(str.encode)), st.booleans())
async def test_the_site_pixel_answers_any_body_without_5xx(edge, body, image) -> None:
    if image:
        response = await edge.get("/ak/e", params={"d": body.decode("utf-8", "replace")})
    else:
        response = await edge.post("/ak/e", content=body)
    assert response.status_code in (200, 204, 400, 413)


# -- numbers on the public routes ---------------------------------------------------------------------------

_SPELLINGS = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
async def report_pages(settings, pg):
    message = await make_message(pg)
    async with running_edge(settings) as (_app, client):
        yield client, message


@_SPELLINGS
@given(number_spellings(), number_spellings(), number_spellings(), st.sampled_from(["", "/clickmap"]))
async def test_report_page_links_read_numbers_in_one_spelling(report_pages, settings, key_id, expiry, message_id, page):
    client, message = report_pages
    expires = int(time.time()) + 600
    mac = sign(settings, message, expires).split(".")[2]
    # The message id in the path, then the link's key id and expiry: each wrong spelling alone is refused.
    answers = [
        await client.get(f"/reports/messages/{quote(message_id)}{page}?t=1.{expires}.{mac}"),
        await client.get(f"/reports/messages/{message}{page}?t={quote(key_id)}.{expires}.{mac}"),
        await client.get(f"/reports/messages/{message}{page}?t=1.{quote(expiry)}.{mac}"),
    ]
    assert all(a.status_code < 500 for a in answers), [a.status_code for a in answers]
    if not canonical(message_id, 1, 2**63 - 1):
        assert answers[0].status_code in (404, 414)  # 414: a path over the edge's limit
    else:  # another message's id: the link is not for it
        assert answers[0].status_code == (200 if message_id == str(message) else 403)
    assert answers[1].status_code == (200 if key_id == "1" else 403)
    assert answers[2].status_code == (200 if expiry == str(expires) else 403)


@_SPELLINGS
@given(number_spellings())
async def test_a_click_map_version_is_read_in_one_spelling(report_pages, settings, version):
    client, message = report_pages
    expires = int(time.time()) + 600
    answer = await client.get(f"/reports/messages/{message}/clickmap",
                              params={"version": version, "t": sign(settings, message, expires)})  # fmt: skip
    assert answer.status_code == (200 if version == "1" else 404), version


@pytest.fixture
async def preferences(settings, pg):
    message, (profile,) = await make_message(pg), await make_profiles(pg, 1)
    token = mint(settings.signing_keys, 1, TokenKind.UNSUBSCRIBE, Channel.EMAIL, message, profile)
    async with running_edge(settings) as (app, client):
        wire_pages(app, PagesSettings())
        yield client, f"/u/{token}/preferences"


@_SPELLINGS
@given(number_spellings(), st.sampled_from(["0", "1", "01", "١", "²"]))
async def test_the_preferences_form_reads_its_list_in_one_spelling(preferences, resource, subscribe):
    client, path = preferences
    answer = await client.post(path, data={"resource": resource, "subscribe": subscribe})
    right = canonical(resource, 1, 2**63 - 1) and subscribe in ("0", "1")
    assert answer.status_code == 200 if right else answer.status_code == 400, (resource, subscribe)


@_BOUNDED
@given(st.lists(number_spellings(), min_size=1, max_size=4), st.sampled_from([".", ":", ",", " "]))
def test_an_ip_prefix_is_made_of_ascii_digits_or_is_empty(parts, separator) -> None:
    prefix = ip_prefix(separator.join(parts))
    assert prefix == "" or (prefix.isascii() and prefix.endswith(("/24", "/48"))), prefix

"""Hypothesis feeds the token decoder, the body reader and the token routes with generated input.

The decoder's only refusal is None (no exception, ever); the body reader's only one is
BodyTooLarge; the routes answer every request with a status below 500.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edge.forms import BodyTooLarge, read_body
from tests.rigs.edge_helpers import running_edge
from tracker.contract.tokens import Channel, TokenKind, issued_at, mint, verify, verify_fresh

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


_paths = st.text(alphabet=_ALPHABET + "+/=%.~", max_size=60)


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

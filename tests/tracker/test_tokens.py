"""Tokens: round trips, tampering, rotation, size."""

from __future__ import annotations

import base64

import pytest

from tracker.contract.tokens import Channel, Token, TokenError, TokenKind, issued_at, mint, parse, verify, verify_fresh

KEYS = {1: b"first-key-0123456789abcdef", 2: b"second-key-0123456789abcdef"}


@pytest.mark.parametrize("kind", list(TokenKind))
@pytest.mark.parametrize("channel", list(Channel))
def test_round_trip_every_kind_and_channel(kind: TokenKind, channel: Channel) -> None:
    token = mint(KEYS, 1, kind, channel, message_id=123456, profile_id=9_876_543_210, link_version=3, link_index=17)
    decoded = parse(KEYS, token)
    clicks = kind == TokenKind.CLICK
    assert decoded == Token(kind, channel, 123456, 9_876_543_210, 1, 3 if clicks else 0, 17 if clicks else 0)


@pytest.mark.parametrize("ids", [(0, 0), (1, 1), (2**31, 2**40), (2**63 - 1, 2**63 - 1)])
def test_extreme_ids_round_trip(ids: tuple[int, int]) -> None:
    token = mint(KEYS, 2, TokenKind.CLICK, Channel.SMS, ids[0], ids[1], 1, 0)
    decoded = parse(KEYS, token)
    assert decoded is not None and (decoded.message_id, decoded.profile_id) == ids


def test_tokens_are_url_safe_and_unpadded() -> None:
    for message_id in range(0, 5000, 37):
        token = mint(KEYS, 1, TokenKind.CLICK, Channel.EMAIL, message_id, message_id * 7919, 1, message_id % 50)
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert verify(KEYS, token) is not None


def test_email_click_token_is_short_for_realistic_ids() -> None:
    # 10 million messages, 2 billion profiles, version 12, link 120.
    token = mint(KEYS, 1, TokenKind.CLICK, Channel.EMAIL, 10_000_000, 2_000_000_000, 12, 120)
    assert len(token) < 64
    assert len(token) <= 32


def test_every_flipped_character_fails() -> None:
    token = mint(KEYS, 1, TokenKind.CLICK, Channel.EMAIL, 4242, 777, 2, 5)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for position in range(len(token)):
        for replacement in alphabet:
            if replacement == token[position]:
                continue
            tampered = token[:position] + replacement + token[position + 1 :]
            assert verify(KEYS, tampered) is None, (position, replacement)


def test_every_flipped_bit_of_the_binary_form_fails() -> None:
    token = mint(KEYS, 1, TokenKind.OPEN, Channel.EMAIL, 4242, 777)
    raw = base64.urlsafe_b64decode(token)
    for byte in range(len(raw)):
        for bit in range(8):
            tampered = bytearray(raw)
            tampered[byte] ^= 1 << bit
            text = base64.urlsafe_b64encode(bytes(tampered)).decode().rstrip("=")
            assert verify(KEYS, text) is None, (byte, bit)


@pytest.mark.parametrize(
    "garbage",
    ["", "x", "====", "!!!!!!!!!!!!!!!!", "A" * 16, "A" * 97, "ab/cd+efgh==ijkl", "é" * 16, "\x00" * 16],
)
def test_garbage_is_rejected_without_exceptions(garbage: str) -> None:
    assert verify(KEYS, garbage) is None


def test_truncated_tokens_fail() -> None:
    token = mint(KEYS, 1, TokenKind.CLICK, Channel.EMAIL, 4242, 777, 2, 5)
    for cut in range(1, len(token)):
        assert verify(KEYS, token[:cut]) is None
    assert verify(KEYS, token + "AAAA") is None


def test_key_rotation() -> None:
    old = mint(KEYS, 1, TokenKind.OPEN, Channel.EMAIL, 1, 2)
    new = mint(KEYS, 2, TokenKind.OPEN, Channel.EMAIL, 1, 2)
    assert parse(KEYS, old).key_id == 1
    assert parse(KEYS, new).key_id == 2
    retired = {2: KEYS[2]}
    assert verify(retired, old) is None
    assert verify(retired, new) is not None
    # Same key id, different secret: a token signed by a stolen id number is worthless.
    assert verify({1: b"another-secret-0123456789"}, old) is None


def test_mint_refuses_unknown_key_and_negative_ids() -> None:
    with pytest.raises(TokenError):
        mint(KEYS, 9, TokenKind.OPEN, Channel.EMAIL, 1, 2)
    with pytest.raises(TokenError):
        mint(KEYS, 1, TokenKind.OPEN, Channel.EMAIL, -1, 2)


def test_only_the_canonical_spelling_verifies() -> None:
    # Tokens holding both URL-safe characters, so each has a second spelling with `+` or `/`.
    tokens = [t for m in range(300) if "-" in (t := mint(KEYS, 1, TokenKind.CLICK, Channel.EMAIL, m, 7, 1, 2))]
    tokens += [t for m in range(300) if "_" in (t := mint(KEYS, 1, TokenKind.OPEN, Channel.EMAIL, m, 7))]
    assert any("-" in t for t in tokens) and any("_" in t for t in tokens)
    for token in tokens:
        assert verify(KEYS, token) is not None
        assert verify(KEYS, token.replace("-", "+")) is None or "-" not in token
        assert verify(KEYS, token.replace("_", "/")) is None or "_" not in token


def test_unsubscribe_and_confirm_tokens_carry_their_issue_time_and_can_expire() -> None:
    for kind in (TokenKind.UNSUBSCRIBE, TokenKind.CONFIRM):
        token = mint(KEYS, 1, kind, Channel.EMAIL, 42, 7, issued_at=1_700_000_000)
        fields = (kind, Channel.EMAIL, 42, 7, 1, 0, 0)
        assert verify(KEYS, token) == fields and issued_at(token) == 1_700_000_000
        day = 86400
        assert verify_fresh(KEYS, token, 30 * day, now=1_700_000_000 + 29 * day) == (fields, False)
        assert verify_fresh(KEYS, token, 30 * day, now=1_700_000_000 + 31 * day) == (None, True)
        assert verify_fresh(KEYS, token, 0, now=1_700_000_000 + 9999 * day) == (fields, False)  # 0: no limit
        # The time is signed like the rest: moving it forward breaks the MAC.
        raw = bytearray(base64.urlsafe_b64decode(token))
        raw[5] ^= 1
        forged = base64.urlsafe_b64encode(bytes(raw)).decode()
        assert verify(KEYS, forged) is None and verify_fresh(KEYS, forged, 30 * day) == (None, False)


def test_tokens_minted_without_a_time_still_verify_and_have_no_age() -> None:
    old = mint(KEYS, 1, TokenKind.UNSUBSCRIBE, Channel.SMS, 5, 6)
    assert issued_at(old) is None
    assert verify_fresh(KEYS, old, 1, now=4_000_000_000) == ((TokenKind.UNSUBSCRIBE, Channel.SMS, 5, 6, 1, 0, 0), False)
    assert verify_fresh(KEYS, "not-a-token-at-all", 1) == (None, False)


def test_only_unsubscribe_and_confirm_tokens_take_an_issue_time() -> None:
    with pytest.raises(TokenError):
        mint(KEYS, 1, TokenKind.OPEN, Channel.EMAIL, 1, 2, issued_at=1_700_000_000)
    with pytest.raises(TokenError):
        mint(KEYS, 1, TokenKind.CONFIRM, Channel.EMAIL, 1, 2, issued_at=1 << 32)

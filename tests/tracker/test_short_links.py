"""SMS short codes: 6-8 base62 characters, unique, stable per recipient and link, cached in Redis."""

from __future__ import annotations

import itertools

import pytest
from msgspec.structs import astuple

from tracker.domain import short_links
from tracker.domain.messages import register_message
from tracker.domain.short_links import CODE_PATTERN, cached, codes_for, new_code, resolve


@pytest.fixture
async def sms(pg) -> tuple[int, int]:
    registered = await register_message(pg, "sms", "codes", "A https://a.example/ B https://b.example/")
    return registered.message_id, registered.version


def test_codes_are_seven_base62_characters() -> None:
    codes = {new_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(CODE_PATTERN.fullmatch(code) and len(code) == 7 for code in codes)


async def test_every_recipient_and_link_gets_a_code_that_resolves_back(pg, redis, settings, sms) -> None:
    message_id, version = sms
    codes = await codes_for(
        pg, message_id, version, 2, [11, 12, 13], redis=redis, prefix=settings.stream_prefix, ttl_s=60
    )
    assert set(codes) == {(p, i) for p in (11, 12, 13) for i in (0, 1)}
    for (profile_id, index), code in codes.items():
        expected = (message_id, version, index, profile_id)
        assert astuple(await resolve(pg, code)) == expected
        assert astuple(await cached(redis, settings.stream_prefix, code)) == expected
        assert 0 < await redis.ttl(short_links.short_link_key(settings.stream_prefix, code)) <= 60


async def test_asking_again_returns_the_same_codes_and_adds_only_missing_ones(pg, sms) -> None:
    message_id, version = sms
    first = await codes_for(pg, message_id, version, 2, [21, 22])
    second = await codes_for(pg, message_id, version, 2, [22, 23])
    assert second[22, 0] == first[22, 0] and second[22, 1] == first[22, 1]
    assert await pg.fetchval("select count(*) from short_links where message_id = $1", message_id) == 6


async def test_a_code_collision_is_retried_with_a_fresh_code(pg, sms, monkeypatch) -> None:
    message_id, version = sms
    [taken] = (await codes_for(pg, message_id, version, 1, [31])).values()
    fresh = iter(["Fresh01", "Fresh02"])
    # The first proposal collides with a code in use; only that pair gets another try.
    proposals = itertools.chain([taken], fresh)
    monkeypatch.setattr(short_links, "new_code", lambda: next(proposals))
    codes = await codes_for(pg, message_id, version, 1, [32])
    assert codes == {(32, 0): "Fresh01"}
    assert (await resolve(pg, taken)).profile_id == 31


@pytest.mark.parametrize("code", ["", "abc", "toolong123", "bad-cod", "ZZZZZZZ", "../etc"])
async def test_malformed_or_unknown_codes_resolve_to_nothing(pg, redis, settings, code: str) -> None:
    assert await resolve(pg, code) is None
    assert await cached(redis, settings.stream_prefix, code) is None

"""SMS short links: `/s/{code}` per recipient and link, so a whole SMS stays short.

Codes are 7 random base62 characters (62**7, about 3.5e12 codes). Postgres
holds them (`short_links`, unique code) and is the truth; Redis holds a copy
for the edge (`{prefix}:short:{code}`, msgpack, with a TTL). A collision is
caught by the unique key and that pair simply gets a new code; a second
render for the same recipient gets the codes it got the first time.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tracker.contract.keys import short_link_key

log = logging.getLogger("tracker.domain.short_links")

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CODE_LEN = 7
CODE_PATTERN = re.compile(r"[0-9A-Za-z]{6,8}")
_MAX_TRIES = 8


class ShortLink(msgspec.Struct, frozen=True, array_like=True):
    message_id: int
    version: int
    link_index: int
    profile_id: int


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(ShortLink).decode


def new_code(length: int = CODE_LEN) -> str:
    number = secrets.randbelow(62**length)
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        chars.append(ALPHABET[digit])
    return "".join(chars)


async def codes_for(
    conn: Any,
    message_id: int,
    version: int,
    links: int,
    profile_ids: list[int],
    redis: Redis | None = None,
    prefix: str = "",
    ttl_s: int = 0,
) -> dict[tuple[int, int], str]:
    """{(profile id, link index): code} for every recipient and link, made where missing.

    With `redis`, every returned code is also cached for the edge (best effort:
    Postgres has it, and the edge falls back to `resolve`).
    """
    wanted = {(profile_id, index) for profile_id in profile_ids for index in range(links)}
    codes: dict[tuple[int, int], str] = {}
    for _attempt in range(_MAX_TRIES):
        missing = wanted - codes.keys()
        if not missing:
            break
        rows = await conn.fetch(
            "select code, idx, profile_id from short_links"
            " where message_id = $1 and version = $2 and profile_id = any($3::bigint[])",
            message_id,
            version,
            sorted({profile_id for profile_id, _ in missing}),
        )
        codes.update({(row["profile_id"], row["idx"]): row["code"] for row in rows})
        missing = sorted(wanted - codes.keys())
        if not missing:
            break
        proposed = [new_code() for _ in missing]
        # `on conflict do nothing` covers both keys: a code taken by someone else (collision)
        # and a pair another render inserted meanwhile; the next round sorts out which.
        rows = await conn.fetch(
            "insert into short_links (code, message_id, version, idx, profile_id)"
            " select code, $1, $2, idx, profile_id"
            " from unnest($3::text[], $4::int[], $5::bigint[]) as t(code, idx, profile_id)"
            " on conflict do nothing returning code, idx, profile_id",
            message_id,
            version,
            proposed,
            [index for _, index in missing],
            [profile_id for profile_id, _ in missing],
        )
        codes.update({(row["profile_id"], row["idx"]): row["code"] for row in rows})
    else:
        raise RuntimeError(f"no free short codes after {_MAX_TRIES} tries")
    if redis is not None and codes:
        await _cache(redis, prefix, ttl_s, message_id, version, codes)
    return codes


async def _cache(
    redis: Redis, prefix: str, ttl_s: int, message_id: int, version: int, codes: dict[tuple[int, int], str]
) -> None:
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for (profile_id, index), code in codes.items():
                pipe.set(short_link_key(prefix, code), _encode(ShortLink(message_id, version, index, profile_id)),
                         ex=ttl_s or None)  # fmt: skip
            await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("short links not cached in Redis (Postgres has them): %s", exc)


async def resolve(conn: Any, code: str) -> ShortLink | None:
    """What a short code stands for, from Postgres; None for a malformed or unknown code."""
    if not CODE_PATTERN.fullmatch(code):
        return None
    row = await conn.fetchrow("select message_id, version, idx, profile_id from short_links where code = $1", code)
    if row is None:
        return None
    return ShortLink(row["message_id"], row["version"], row["idx"], row["profile_id"])


async def cached(redis: Redis, prefix: str, code: str) -> ShortLink | None:
    """The Redis copy, or None when it is not there (then ask `resolve`)."""
    if not CODE_PATTERN.fullmatch(code):
        return None
    raw = await redis.get(short_link_key(prefix, code))
    return None if not raw else _decode(raw)  # b"": the edge noted the code as unknown (edge.tiered_cache)

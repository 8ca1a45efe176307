"""API keys: made by `tracker create-api-key`, shown once, kept as a SHA-256 of the secret part.

A key reads `trk_<12 hex id>_<43 url-safe chars>`. The id finds the row; the
secret (256 random bits) is compared by hash in constant time. A hash with no
salt or stretching is enough here: the secret is random, not a password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from tracker.domain.errors import InputError

SCOPES = ("read", "write")
PREFIX = "trk_"
_ID_LEN = 12


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scopes: frozenset[str]


def parse_scopes(text: str) -> list[str]:
    scopes = sorted({s.strip() for s in text.split(",") if s.strip()})
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise InputError("invalid_scopes", f"scopes {text!r}: expected a comma-separated subset of {', '.join(SCOPES)}")
    return scopes


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


async def create_api_key(conn: Any, name: str, scopes: list[str]) -> tuple[str, ApiKey]:
    """(the key text, to show once, and what is stored about it)."""
    if not name.strip():
        raise InputError("invalid_name", "an API key needs a non-empty name")
    key_id, secret = secrets.token_hex(_ID_LEN // 2), secrets.token_urlsafe(32)
    await conn.execute(
        "insert into api_keys (id, name, scopes, secret_sha256) values ($1, $2, $3, $4)",
        key_id,
        name,
        scopes,
        _hash(secret),
    )
    return f"{PREFIX}{key_id}_{secret}", ApiKey(key_id, name, frozenset(scopes))


async def check_api_key(conn: Any, text: str) -> ApiKey | None:
    """The key's record when `text` is a live key, else None (malformed, unknown, wrong or revoked)."""
    if not text.startswith(PREFIX) or len(text) > 200 or text[4 + _ID_LEN : 5 + _ID_LEN] != "_":
        return None
    key_id, secret = text[4 : 4 + _ID_LEN], text[5 + _ID_LEN :]
    row = await conn.fetchrow(
        "select name, scopes, secret_sha256 from api_keys where id = $1 and revoked_at is null", key_id
    )
    # Hash and compare even for an unknown id, so timing does not tell which ids exist.
    expected = bytes(row["secret_sha256"]) if row is not None else bytes(32)
    if not hmac.compare_digest(_hash(secret), expected) or row is None:
        return None
    return ApiKey(key_id, row["name"], frozenset(row["scopes"]))


def key_id_of(text: str) -> str:
    """The id of a key given as its id or as the whole key (an operator may paste either)."""
    text = text.strip()
    if text.startswith(PREFIX):
        text = text[len(PREFIX) : len(PREFIX) + _ID_LEN]
    text = text.lower()  # ids are made lower case; a hand-typed one may not be
    if len(text) != _ID_LEN or any(c not in "0123456789abcdef" for c in text):
        raise InputError("invalid_key_id", f"{text[:20]!r} is not an API key id: expected {_ID_LEN} hex digits")
    return text


async def revoke_api_key(conn: Any, key_id: str) -> bool:
    """True when the key was live and is revoked now; the API refuses it from its next request on."""
    status = await conn.execute("update api_keys set revoked_at = now() where id = $1 and revoked_at is null", key_id)
    return status.endswith(" 1")


async def list_api_keys(conn: Any, *, include_revoked: bool = False) -> list[dict[str, Any]]:
    """Every key's id, name, scopes and times; never a secret or its hash."""
    rows = await conn.fetch(
        "select id, name, scopes, created_at, revoked_at from api_keys"
        " where $1 or revoked_at is null order by created_at, id",
        include_revoked,
    )
    return [dict(row) for row in rows]

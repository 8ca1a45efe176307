"""Short-lived signed URLs for the report pages: people open them in a browser, no API key.

A link names one message and an expiry; it is an HMAC over both with one of the signing keys
(key id in the link, so keys rotate as for tracking tokens). The message's pages (funnel, click
map, any version) all accept it until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import asyncpg

from tracker.config import Settings
from tracker.contract.numbers import parse_int
from tracker.contract.tokens import MAX_KEY_ID
from tracker.domain.errors import NotFound

_DOMAIN = b"tracker-analytics-link:"
_MAX_EXPIRES = 10**12 - 1  # seconds: far past any TTL the settings allow


@dataclass(frozen=True, slots=True)
class ReportLink:
    url: str
    expires_at: int  # seconds since the epoch


def _signature(key: bytes, message_id: int, expires: int) -> str:
    mac = hmac.new(key, _DOMAIN + f"{message_id}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")


def sign(settings: Settings, message_id: int, expires: int) -> str:
    key_id = settings.active_key_id
    return f"{key_id}.{expires}.{_signature(settings.signing_keys[key_id], message_id, expires)}"


def check(keys: dict[int, bytes], message_id: int, token: str, now: float | None = None) -> str | None:
    """None when the token opens this message's pages now; else why not ("expired" or "invalid")."""
    parts = token.split(".")
    if len(parts) != 3:
        return "invalid"
    # One spelling each: "01" or "\u0661" is not key 1, and an expiry is signed as str() writes it.
    key_id, expires = parse_int(parts[0], 0, MAX_KEY_ID), parse_int(parts[1], 0, _MAX_EXPIRES)
    key = None if key_id is None else keys.get(key_id)
    if key is None or expires is None or not hmac.compare_digest(_signature(key, message_id, expires), parts[2]):
        return "invalid"
    return "expired" if expires < (time.time() if now is None else now) else None


def report_link(
    settings: Settings, message_id: int, page: str = "funnel", version: int | None = None, now: float | None = None
) -> ReportLink:
    expires = int(time.time() if now is None else now) + settings.edge.analytics_link_ttl_s
    path = f"/reports/messages/{message_id}" + ("/clickmap" if page == "clickmap" else "")
    query = {"version": str(version)} if version is not None and page == "clickmap" else {}
    query["t"] = sign(settings, message_id, expires)
    return ReportLink(f"{settings.public_url.rstrip('/')}{path}?{urlencode(query)}", expires)


async def stored_message_link(
    conn: asyncpg.Connection, settings: Settings, message_id: int, page: str, version: int | None
) -> ReportLink:
    """`report_link` for a message (and link-table version) that exists; NotFound naming the one that does not."""
    if not await conn.fetchval("select exists (select from messages where id = $1)", message_id):
        raise NotFound("message", message_id)
    if version is not None and not await conn.fetchval(
        "select exists (select from link_table_versions where message_id = $1 and version = $2)", message_id, version
    ):
        raise NotFound(f"message {message_id} version", version)
    return report_link(settings, message_id, page, version)

"""What every provider module shares: the request it reads, the reports it returns, auth checks.

A provider turns one authenticated request into `Report`s: a kind from the
event vocabulary (or None for a provider event we do not track), the raw
`X-Tracker-Ref` the message carried, the provider's own event id and time,
and a few short facts. `ProviderReportRoutes` verifies the refs and records events.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from starlette.datastructures import Headers, QueryParams

from tracker.config import SettingsError

MAX_TEXT = 256  # characters kept of any provider string put into an event's data
MAX_DATA_KEYS = 8


class ReportError(Exception):
    """A request the edge refuses: the status and a short reason go back to the sender."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def unauthorized(reason: str = "bad signature") -> ReportError:
    return ReportError(401, reason)


def malformed(reason: str) -> ReportError:
    return ReportError(400, reason)


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """One provider report POST, body already read within the size limit."""

    path: str
    query_string: str
    headers: Headers
    body: bytes

    @property
    def query(self) -> QueryParams:
        return QueryParams(self.query_string)


@dataclass(frozen=True, slots=True)
class Report:
    """One delivery report, provider-neutral. `kind` None: understood, not tracked (counted, skipped)."""

    kind: str | None
    ref: str | None
    provider_event_id: str
    ts_us: int
    data: dict[str, Any] = field(default_factory=dict)
    # ts_us is when this edge first saw the report, not the provider's time (the provider sends none)
    arrival_time: bool = False


class Provider(Protocol):
    channel: str
    name: str
    content_types: frozenset[str]  # media types the provider sends (415 for any other)

    def check_headers(self, headers: Headers) -> None:
        """What can be refused before the body is read (credentials, signature headers present); raise `ReportError`."""
        ...

    async def reports(self, request: ReportRequest) -> list[Report]:
        """Authenticate the request and read its reports; raise `ReportError` to refuse it."""
        ...


# -- event facts -----------------------------------------------------------------------------------


def clip(value: Any) -> str:
    """A provider string made safe to store: text, at most MAX_TEXT characters."""
    text = value if isinstance(value, str) else str(value)
    return text[:MAX_TEXT]


def facts(**values: Any) -> dict[str, str]:
    """The event's data: the given facts that are present, as clipped strings."""
    out = {key: clip(value) for key, value in values.items() if value not in (None, "", [], {})}
    return dict(list(out.items())[:MAX_DATA_KEYS])


# A fixed key, not a signing key: rotating the signing keys must not change the id a
# redelivered report gets, or the flusher could no longer tell that it is a duplicate.
_EVENT_ID_KEY = b"tracker/webhook-event-id/v1"


def report_event_id(channel: str, provider: str, provider_event_id: str, ts_us: int, arrival_time: bool = False,
                    *, kind: str, recipient: str) -> bytes:  # fmt: skip
    """A UUIDv7-layout id that a redelivery of the same report gets again.

    48 bits of ms time (the provider's event time; zero when `ts_us` is only the arrival
    time, see tracker.contract.events.TIMELESS_ID_PREFIX) | version 7 | 12 + 62 bits of a keyed
    hash of (channel, provider, provider event id, kind, recipient) around the variant bits.
    The kind and the recipient (message:profile from the ref) are in the hash because providers
    reuse an event id across them: SendGrid's documented `bounce` and `blocked` samples share an
    `sg_event_id`, and without them the second report would be stored as a duplicate of the first.
    """
    if arrival_time:
        ts_us = 0
    digest = hashlib.blake2b(
        f"{channel}\0{provider}\0{provider_event_id}\0{kind}\0{recipient}".encode(), digest_size=10,
        key=_EVENT_ID_KEY,
    ).digest()
    h = int.from_bytes(digest, "big") >> 6  # 74 bits
    value = (ts_us // 1000) << 80 | 0x7 << 76 | (h >> 62) << 64 | 0b10 << 62 | (h & ((1 << 62) - 1))
    return value.to_bytes(16, "big")


# -- times -----------------------------------------------------------------------------------------

# re.ASCII throughout: \d would also take other scripts' digits, which float() and datetime read as numbers.
_ISO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$", re.ASCII)
_SECONDS = re.compile(r"\d{9,11}(\.\d{1,9})?", re.ASCII)


def parse_time_us(value: Any) -> int:
    """Microseconds since the epoch from Unix seconds (int, float or digits) or ISO 8601 text."""
    if isinstance(value, bool):
        raise malformed("bad timestamp")
    if isinstance(value, float) and not math.isfinite(value):
        raise malformed("bad timestamp")
    if isinstance(value, int | float):
        return _checked_us(round(value * 1_000_000))
    if isinstance(value, str):
        text = value.strip()
        if _SECONDS.fullmatch(text):
            return _checked_us(round(float(text) * 1_000_000))
        match = _ISO.match(text)
        if match:
            # Postmark sends 7 fractional digits, more than datetime takes: keep microseconds.
            base, fraction, zone = match.groups()
            zone = "+00:00" if zone in (None, "Z") else zone
            try:
                moment = datetime.fromisoformat(f"{base}.{(fraction or '0')[:6].ljust(6, '0')}{zone}")
            except ValueError:  # shaped like a date, but not one: month 13, February 30, offset +99:00
                raise malformed("bad timestamp") from None
            return _checked_us(int(moment.timestamp() * 1_000_000))
    raise malformed("bad timestamp")


def _checked_us(ts_us: int) -> int:
    # Inside the 48-bit ms range of an event id and after 2000: anything else is not a real report.
    if not 946_684_800_000_000 <= ts_us < (1 << 48) * 1000:
        raise malformed("timestamp out of range")
    return ts_us


def now_us() -> int:
    return time.time_ns() // 1000


_UNIX_SECONDS = re.compile(r"\d{1,12}(?:\.\d{1,9})?", re.ASCII)


def check_fresh(timestamp: str, max_skew_s: int) -> float:
    """A signed timestamp (Unix seconds) must be within `max_skew_s` of our clock, either way.

    Digits only: `float()` would also take nan (which compares as fresh), inf, exponents,
    underscores and spaces, none of which a provider sends. Returns the time, in seconds.
    """
    if not _UNIX_SECONDS.fullmatch(timestamp):
        raise unauthorized("bad timestamp")
    signed_at = float(timestamp)
    if abs(time.time() - signed_at) > max_skew_s:
        raise unauthorized("timestamp outside the allowed clock skew")
    return signed_at


# -- auth ------------------------------------------------------------------------------------------


class BasicAuth:
    """Checks `Authorization: Basic ...` against USER:PASSWORD from a setting."""

    def __init__(self, env: str, credentials: str) -> None:
        if ":" not in credentials:
            raise SettingsError(f"{env}: expected USER:PASSWORD")
        self.expected = hashlib.sha256(credentials.encode()).digest()

    def check(self, headers: Headers) -> None:
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            raise unauthorized("basic auth required")
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise unauthorized("bad basic auth") from None
        # Digests compared, so the comparison takes the same time whatever the lengths.
        if not hmac.compare_digest(hashlib.sha256(given).digest(), self.expected):
            raise unauthorized("bad credentials")


def media_type(headers: Headers) -> str:
    """The Content-Type without its parameters, lower case ("" when absent)."""
    return headers.get("content-type", "").partition(";")[0].strip().lower()


def hmac_hex(secret: bytes, data: bytes, digest: str = "sha256") -> str:
    return hmac.new(secret, data, digest).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def header_value(headers: Any, name: str) -> str | None:
    """A header from a provider's list of {name, value} (or Name/Value) pairs or a dict, any case."""
    wanted = name.lower()
    if isinstance(headers, dict):
        for key, value in headers.items():
            if isinstance(key, str) and key.lower() == wanted and isinstance(value, str):
                return value
        return None
    if isinstance(headers, list):
        for item in headers:
            if not isinstance(item, dict):
                continue
            key = item.get("name", item.get("Name"))
            value = item.get("value", item.get("Value"))
            if isinstance(key, str) and key.lower() == wanted and isinstance(value, str):
                return value
    return None


def setting_regex(env: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise SettingsError(f"{env}: not a regular expression ({exc})") from None

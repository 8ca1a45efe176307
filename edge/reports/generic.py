"""The generic JSON format, for senders we control (an in-house MTA, an SMS aggregator adapter).

    POST /hooks/{email,sms}/generic
    X-Tracker-Timestamp: 1717171717                  (Unix seconds, when the request was signed)
    X-Tracker-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
    Content-Type: application/json

    [{"type": "hard_bounce", "ref": "<X-Tracker-Ref>", "provider_event_id": "mta-4711",
      "timestamp": "2024-05-31T16:08:37Z", "reason": "mailbox unknown", "code": "5.1.1"}]

The signature covers the timestamp so a captured request cannot be replayed later
than TRACKER_REPORT_MAX_SKEW_S; a sender signs each attempt afresh. The timestamp is
Unix seconds in digits (nan, inf or an exponent gets 401); it, and that both headers
are there, is checked before the body is read. One secret per
channel (TRACKER_REPORT_GENERIC_EMAIL_SECRET, TRACKER_REPORT_GENERIC_SMS_SECRET).
"""

from __future__ import annotations

import msgspec
from starlette.datastructures import Headers

from edge.reports.base import (
    Report,
    ReportRequest,
    check_fresh,
    facts,
    hmac_hex,
    malformed,
    parse_time_us,
    same,
    unauthorized,
)
from tracker.config import Settings

KINDS = {
    "email": frozenset(
        {"delivered", "undelivered", "soft_bounce", "hard_bounce", "complained", "opened", "clicked", "unsubscribed"}
    ),
    "sms": frozenset({"delivered", "undelivered"}),
}


class GenericReport(msgspec.Struct):
    type: str
    ref: str
    provider_event_id: str
    timestamp: str | int | float
    reason: str | None = None
    code: str | int | None = None
    url: str | None = None


_decode = msgspec.json.Decoder(list[GenericReport]).decode


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Tracker-Signature value a sender puts on `body` (also used by the tests)."""
    return "sha256=" + hmac_hex(secret.encode(), timestamp.encode() + b"." + body)


class GenericReports:
    name = "generic"
    content_types = frozenset({"application/json"})

    def __init__(self, channel: str, secret: str, max_skew_s: int) -> None:
        self.channel = channel
        self.secret = secret
        self.max_skew_s = max_skew_s
        self.kinds = KINDS[channel]

    @classmethod
    def from_settings(cls, settings: Settings, channel: str) -> GenericReports | None:
        secret = getattr(settings.reports, f"generic_{channel}_secret")
        return cls(channel, secret, settings.reports.max_skew_s) if secret else None

    def check_headers(self, headers: Headers) -> None:
        if not headers.get("x-tracker-timestamp") or not headers.get("x-tracker-signature"):
            raise unauthorized("X-Tracker-Timestamp and X-Tracker-Signature required")
        check_fresh(headers["x-tracker-timestamp"], self.max_skew_s)

    async def reports(self, request: ReportRequest) -> list[Report]:
        self.check_headers(request.headers)
        timestamp = request.headers["x-tracker-timestamp"]
        if not same(sign(self.secret, timestamp, request.body), request.headers["x-tracker-signature"]):
            raise unauthorized()
        try:
            items = _decode(request.body)
        except msgspec.DecodeError as exc:
            raise malformed(f"expected a JSON array of reports: {exc}") from None
        reports = []
        for item in items:
            if item.type not in self.kinds:
                raise malformed(f"type {item.type!r} is not one of {', '.join(sorted(self.kinds))}")
            if not item.provider_event_id:
                raise malformed("provider_event_id must not be empty")
            data = facts(provider=self.name, reason=item.reason, code=item.code, url=item.url)
            reports.append(Report(item.type, item.ref, item.provider_event_id, parse_time_us(item.timestamp), data))
        return reports

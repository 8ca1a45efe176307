"""Mailgun webhooks (JSON, one event per request): `POST /hooks/email/mailgun`.

Auth: the body's `signature` object: `signature` = hex HMAC-SHA256 over
timestamp + token with the HTTP webhook signing key (TRACKER_REPORT_MAILGUN_SIGNING_KEY),
timestamp within TRACKER_REPORT_MAX_SKEW_S.

Mapping: delivered -> delivered, failed/permanent -> hard_bounce, failed/temporary ->
soft_bounce, rejected -> undelivered, complained -> complained, opened -> opened,
clicked -> clicked, unsubscribed -> unsubscribed; accepted and stored are not tracked.
The ref: the `tracker_ref` user variable (send with `v:tracker_ref` or
`X-Mailgun-Variables`), else an X-Tracker-Ref in `message.headers`.
The provider event id is `event-data.id`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from edge.reports.base import (
    Report,
    ReportRequest,
    check_fresh,
    facts,
    header_value,
    hmac_hex,
    malformed,
    parse_time_us,
    same,
    unauthorized,
)
from tracker.config import Settings

_KINDS = {"delivered": "delivered", "rejected": "undelivered", "complained": "complained", "opened": "opened",
          "clicked": "clicked", "unsubscribed": "unsubscribed"}  # fmt: skip


class MailgunSignature(msgspec.Struct):
    timestamp: str
    token: str
    signature: str


class MailgunReport(msgspec.Struct):
    signature: MailgunSignature
    event_data: dict[str, Any] = msgspec.field(name="event-data")


_decode = msgspec.json.Decoder(MailgunReport).decode


def sign(signing_key: str, timestamp: str, token: str) -> str:
    return hmac_hex(signing_key.encode(), (timestamp + token).encode())


class MailgunEvents:
    channel = "email"
    name = "mailgun"

    def __init__(self, signing_key: str, max_skew_s: int) -> None:
        self.signing_key = signing_key
        self.max_skew_s = max_skew_s

    @classmethod
    def from_settings(cls, settings: Settings) -> MailgunEvents | None:
        key = settings.reports.mailgun_signing_key
        return cls(key, settings.reports.max_skew_s) if key else None

    async def reports(self, request: ReportRequest) -> list[Report]:
        # The signature lives in the body: a body that does not parse cannot be authenticated.
        try:
            hook = _decode(request.body)
        except msgspec.DecodeError:
            raise unauthorized("expected a signed Mailgun JSON webhook") from None
        signed = hook.signature
        if not same(sign(self.signing_key, signed.timestamp, signed.token), signed.signature):
            raise unauthorized()
        check_fresh(signed.timestamp, self.max_skew_s)
        return [mailgun_report(hook.event_data)]


def mailgun_report(event: dict[str, Any]) -> Report:
    name, event_id = event.get("event"), event.get("id")
    if not isinstance(name, str) or not isinstance(event_id, str) or not event_id:
        raise malformed("event-data needs event and id")
    if name == "failed":
        kind = "hard_bounce" if event.get("severity") == "permanent" else "soft_bounce"
    else:
        kind = _KINDS.get(name)
    status = event.get("delivery-status") if isinstance(event.get("delivery-status"), dict) else {}
    message = event.get("message") if isinstance(event.get("message"), dict) else {}
    variables = event.get("user-variables") if isinstance(event.get("user-variables"), dict) else {}
    ref = variables.get("tracker_ref")
    if not isinstance(ref, str):
        ref = header_value(message.get("headers"), "X-Tracker-Ref")
    data = facts(
        provider="mailgun",
        reason=event.get("reason"),
        code=status.get("code"),
        description=status.get("description") or status.get("message"),
        url=event.get("url"),
    )
    return Report(kind, ref, event_id, parse_time_us(event.get("timestamp")), data)

"""SendGrid event webhook batches: `POST /hooks/email/sendgrid`.

Auth: the signed event webhook. SendGrid signs timestamp + raw body with ECDSA
P-256/SHA-256 and sends the base64 DER signature and the timestamp in
`X-Twilio-Email-Event-Webhook-Signature` / `-Timestamp`; the verification key
(base64 DER as shown in SendGrid's settings, or PEM) is TRACKER_REPORT_SENDGRID_PUBLIC_KEY.

Mapping: delivered -> delivered, bounce (type "bounce") -> hard_bounce, bounce of
type "blocked" -> soft_bounce, deferred -> deferred (SendGrid will try again: not final,
not a bounce), dropped -> undelivered, spamreport -> complained, open -> opened,
click -> clicked, unsubscribe / group_unsubscribe -> unsubscribed; processed and
group_resubscribe are not tracked. Content-Type: application/json. The signature and
timestamp headers (present, base64, fresh) are checked before the body is read.
The ref: a `tracker_ref` custom arg (SendGrid puts custom args at the top level of each event).
The provider event id is `sg_event_id`.
"""

from __future__ import annotations

import base64
import binascii

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.datastructures import Headers

from edge.reports.base import Report, ReportRequest, check_fresh, facts, malformed, parse_time_us, unauthorized
from tracker.config import Settings, SettingsError

SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"
_KINDS = {"delivered": "delivered", "deferred": "deferred", "dropped": "undelivered", "spamreport": "complained",
          "open": "opened", "click": "clicked", "unsubscribe": "unsubscribed",
          "group_unsubscribe": "unsubscribed"}  # fmt: skip


class SendGridEvent(msgspec.Struct):
    event: str
    sg_event_id: str
    timestamp: int | float
    tracker_ref: str | None = None
    type: str | None = None  # bounce or blocked, on bounce events
    reason: str | None = None
    status: str | None = None
    response: str | None = None
    bounce_classification: str | None = None
    url: str | None = None


_decode = msgspec.json.Decoder(list[SendGridEvent]).decode


def load_public_key(env: str, text: str) -> ec.EllipticCurvePublicKey:
    try:
        if "-----BEGIN" in text:
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error, TypeError):
        raise SettingsError(f"{env}: expected the base64 (or PEM) ECDSA public key SendGrid shows") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SettingsError(f"{env}: expected an ECDSA public key")
    return key


class SendGridEvents:
    channel = "email"
    name = "sendgrid"
    content_types = frozenset({"application/json"})

    def __init__(self, public_key: ec.EllipticCurvePublicKey, max_skew_s: int) -> None:
        self.public_key = public_key
        self.max_skew_s = max_skew_s

    @classmethod
    def from_settings(cls, settings: Settings) -> SendGridEvents | None:
        if not settings.reports.sendgrid_public_key:
            return None
        key = load_public_key("TRACKER_REPORT_SENDGRID_PUBLIC_KEY", settings.reports.sendgrid_public_key)
        return cls(key, settings.reports.max_skew_s)

    def check_headers(self, headers: Headers) -> None:
        self._signature(headers)

    def _signature(self, headers: Headers) -> bytes:
        """The signature, decoded, once its headers are there and the timestamp is fresh."""
        try:
            signature = base64.b64decode(headers.get(SIGNATURE_HEADER, ""), validate=True)
        except (binascii.Error, ValueError):
            raise unauthorized() from None
        if not signature:
            raise unauthorized("signed event webhook headers required")
        check_fresh(headers.get(TIMESTAMP_HEADER, ""), self.max_skew_s)
        return signature

    async def reports(self, request: ReportRequest) -> list[Report]:
        signature = self._signature(request.headers)
        timestamp = request.headers[TIMESTAMP_HEADER]
        try:
            self.public_key.verify(signature, timestamp.encode() + request.body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            raise unauthorized() from None
        try:
            events = _decode(request.body)
        except msgspec.DecodeError as exc:
            raise malformed(f"expected a SendGrid event array: {exc}") from None
        return [_report(event) for event in events]


def _report(event: SendGridEvent) -> Report:
    if event.event == "bounce":
        kind = "soft_bounce" if event.type == "blocked" else "hard_bounce"
    else:
        kind = _KINDS.get(event.event)
    data = facts(
        provider="sendgrid",
        reason=event.reason or event.response or event.bounce_classification,
        code=event.status,
        classification=event.bounce_classification,
        url=event.url,
    )
    return Report(kind, event.tracker_ref, event.sg_event_id, parse_time_us(event.timestamp), data)

"""Amazon SES notifications delivered by SNS: `POST /hooks/email/ses`.

Auth: the SNS signature (see `sns`), and the TopicArn must be one of
TRACKER_REPORT_SES_TOPIC_ARNS: anyone can create a topic and sign for it, only our
topics are ours. Raw message delivery must be off (the SNS envelope is needed).

Both SES formats are read: notifications (`notificationType`) and event publishing
(`eventType`). Mapping: Bounce/Permanent -> hard_bounce, Bounce/Transient or
Undetermined -> soft_bounce, Complaint -> complained, Delivery -> delivered,
Reject -> undelivered, Open -> opened, Click -> clicked, Subscription ->
unsubscribed; Send, DeliveryDelay, Rendering Failure are not tracked.
The ref: the X-Tracker-Ref header in `mail.headers`, or a `tracker_ref` message tag.
The provider event id is the SNS MessageId, which SNS keeps across its retries.
Content-Type: text/plain (SNS's default) or application/json (a delivery policy's
headerContentType). Odd shapes inside a signed message (recipients that are not a list,
a type that is not a string) are read as absent; a time that is not a date gets 400.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.datastructures import Headers

from edge.reports.base import (
    Report,
    ReportRequest,
    facts,
    header_value,
    malformed,
    parse_time_us,
    setting_regex,
    unauthorized,
)
from edge.reports.sns import SnsVerifier
from tracker.config import Settings

_SIMPLE = {"Complaint": "complained", "Delivery": "delivered", "Reject": "undelivered", "Open": "opened",
           "Click": "clicked", "Subscription": "unsubscribed"}  # fmt: skip
# Where each event type keeps its details (and their timestamp).
_DETAIL = {"Bounce": "bounce", "Complaint": "complaint", "Delivery": "delivery", "Reject": "reject", "Open": "open",
           "Click": "click", "Subscription": "subscription", "DeliveryDelay": "deliveryDelay",
           "Send": "send"}  # fmt: skip


class SesNotifications:
    channel = "email"
    name = "ses"
    content_types = frozenset({"text/plain", "application/json"})

    def __init__(self, topics: frozenset[str], verifier: SnsVerifier) -> None:
        self.topics = topics
        self.sns = verifier

    @classmethod
    def from_settings(cls, settings: Settings) -> SesNotifications | None:
        topics = frozenset(filter(None, (t.strip() for t in settings.reports.ses_topic_arns.split(","))))
        if not topics:
            return None
        verifier = SnsVerifier(
            setting_regex("TRACKER_REPORT_SNS_CERT_URL_PATTERN", settings.reports.sns_cert_url_pattern),
            setting_regex("TRACKER_REPORT_SNS_SUBSCRIBE_URL_PATTERN", settings.reports.sns_subscribe_url_pattern),
        )
        return cls(topics, verifier)

    def check_headers(self, headers: Headers) -> None:
        """Nothing to check before the body: the SNS signature is in it."""

    async def reports(self, request: ReportRequest) -> list[Report]:
        try:
            envelope = msgspec.json.decode(request.body)
        except msgspec.DecodeError:
            raise malformed("expected an SNS JSON message") from None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("Type"), str):
            raise malformed("expected an SNS JSON message")
        # The topic first: no certificate is fetched for somebody else's topic.
        topic = envelope.get("TopicArn")
        if not isinstance(topic, str) or topic not in self.topics:
            raise unauthorized("SNS topic not allowed")
        await self.sns.verify(envelope)
        kind = envelope["Type"]
        if kind == "SubscriptionConfirmation":
            await self.sns.confirm(envelope)
            return []
        if kind != "Notification":
            return []  # UnsubscribeConfirmation: nothing to do
        message = envelope.get("Message")
        try:
            notification = msgspec.json.decode(message if isinstance(message, str) else "")
        except msgspec.DecodeError:
            raise malformed("SNS Message is not an SES notification") from None
        if not isinstance(notification, dict):
            raise malformed("SNS Message is not an SES notification")
        return [ses_report(notification, str(envelope["MessageId"]), envelope.get("Timestamp"))]


def ses_report(notification: dict[str, Any], provider_event_id: str, sent_at: Any) -> Report:
    """One SES notification or event as a report (an SES message has one recipient here)."""
    event_type = notification.get("notificationType") or notification.get("eventType")
    event_type = event_type if isinstance(event_type, str) else ""
    mail = notification.get("mail") if isinstance(notification.get("mail"), dict) else {}
    detail = notification.get(_DETAIL.get(event_type, ""), {})
    detail = detail if isinstance(detail, dict) else {}
    ts_us = parse_time_us(detail.get("timestamp") or mail.get("timestamp") or sent_at)
    data: dict[str, str] = {}
    if event_type == "Bounce":
        bounce_type = detail.get("bounceType")
        kind = "hard_bounce" if bounce_type == "Permanent" else "soft_bounce"
        recipients = detail.get("bouncedRecipients")
        first = recipients[0] if isinstance(recipients, list) and recipients else {}
        first = first if isinstance(first, dict) else {}
        data = facts(provider="ses", reason=f"{bounce_type}/{detail.get('bounceSubType')}",
                     code=first.get("status"), diagnostic=first.get("diagnosticCode"))  # fmt: skip
    elif event_type in _SIMPLE:
        kind = _SIMPLE[event_type]
        data = facts(
            provider="ses",
            reason=detail.get("complaintFeedbackType") or detail.get("reason"),
            smtp=detail.get("smtpResponse"),
            url=detail.get("link"),
        )
    else:
        kind = None
    return Report(kind, _ref(mail), provider_event_id, ts_us, data)


def _ref(mail: dict[str, Any]) -> str | None:
    ref = header_value(mail.get("headers"), "X-Tracker-Ref")
    if ref is None:
        tags = mail.get("tags")
        values = tags.get("tracker_ref") if isinstance(tags, dict) else None
        ref = values[0] if isinstance(values, list) and values and isinstance(values[0], str) else None
    return ref

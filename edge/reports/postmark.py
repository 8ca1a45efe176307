"""Postmark webhooks (JSON, one record per request): `POST /hooks/email/postmark`.

Auth: HTTP basic auth; set the webhook URL in Postmark as
`https://USER:PASSWORD@edge.example.com/hooks/email/postmark` with the same
USER:PASSWORD in TRACKER_REPORT_POSTMARK_BASIC_AUTH.

Mapping by RecordType: Delivery -> delivered, SpamComplaint -> complained,
Open -> opened, Click -> clicked; a SubscriptionChange that suppresses sending, by its
SuppressionReason: HardBounce -> hard_bounce, SpamComplaint -> complained,
ManualSuppression -> unsubscribed (a person stopped the sending, by the recipient's
unsubscribe link or by hand in Postmark: for us that is an unsubscribe; one that
re-enables sending is not tracked); Bounce by its Type: HardBounce,
BadEmailAddress, ManuallyDeactivated -> hard_bounce; SoftBounce, Transient,
DnsError, Blocked, Unknown, DMARCPolicy... -> soft_bounce; SpamComplaint ->
complained; Unsubscribe -> unsubscribed; auto-replies and the like are not tracked.
The ref: `Metadata.tracker_ref` (set Metadata when sending), else an X-Tracker-Ref in `Headers`.
The provider event id: the record's `ID` where it has one (bounces, complaints),
else RecordType + MessageID + the record's time.
Basic auth and Content-Type (application/json) are checked before the body is read.
A time that is not a date gets 400.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.datastructures import Headers

from edge.reports.base import BasicAuth, Report, ReportRequest, facts, header_value, malformed, parse_time_us
from tracker.config import Settings

_BOUNCES = {
    "HardBounce": "hard_bounce",
    "BadEmailAddress": "hard_bounce",
    "ManuallyDeactivated": "hard_bounce",
    "SoftBounce": "soft_bounce",
    "Transient": "soft_bounce",
    "DnsError": "soft_bounce",
    "Blocked": "soft_bounce",
    "Unknown": "soft_bounce",
    "DMARCPolicy": "soft_bounce",
    "SMTPApiError": "soft_bounce",
    "SpamNotification": "soft_bounce",
    "VirusNotification": "soft_bounce",
    "SpamComplaint": "complained",
    "Unsubscribe": "unsubscribed",
}
_RECORDS = {"Delivery": "delivered", "SpamComplaint": "complained", "Open": "opened", "Click": "clicked"}
_SUPPRESSIONS = {"HardBounce": "hard_bounce", "SpamComplaint": "complained", "ManualSuppression": "unsubscribed"}
_TIME_FIELDS = ("BouncedAt", "DeliveredAt", "ReceivedAt", "ChangedAt")


class PostmarkEvents:
    channel = "email"
    name = "postmark"
    content_types = frozenset({"application/json"})

    def __init__(self, auth: BasicAuth) -> None:
        self.auth = auth

    @classmethod
    def from_settings(cls, settings: Settings) -> PostmarkEvents | None:
        credentials = settings.reports.postmark_basic_auth
        return cls(BasicAuth("TRACKER_REPORT_POSTMARK_BASIC_AUTH", credentials)) if credentials else None

    def check_headers(self, headers: Headers) -> None:
        self.auth.check(headers)

    async def reports(self, request: ReportRequest) -> list[Report]:
        self.auth.check(request.headers)
        try:
            record = msgspec.json.decode(request.body)
        except msgspec.DecodeError:
            raise malformed("expected a Postmark JSON record") from None
        if not isinstance(record, dict) or not isinstance(record.get("RecordType"), str):
            raise malformed("expected a Postmark JSON record with RecordType")
        return [postmark_report(record)]


def postmark_report(record: dict[str, Any]) -> Report:
    record_type = record["RecordType"]
    if record_type == "Bounce":
        kind = _BOUNCES.get(str(record.get("Type")))
    elif record_type == "SubscriptionChange":
        suppressed = record.get("SuppressSending") is True
        kind = _SUPPRESSIONS.get(str(record.get("SuppressionReason"))) if suppressed else None
    else:
        kind = _RECORDS.get(record_type)
    when = next((record[f] for f in _TIME_FIELDS if isinstance(record.get(f), str)), None)
    if when is None:
        raise malformed(f"{record_type} record without its time")
    if record.get("ID") is not None:
        event_id = f"{record_type}:{record['ID']}"
    else:
        event_id = f"{record_type}:{record.get('MessageID')}:{when}"
    metadata = record.get("Metadata") if isinstance(record.get("Metadata"), dict) else {}
    ref = metadata.get("tracker_ref")
    if not isinstance(ref, str):
        ref = header_value(record.get("Headers"), "X-Tracker-Ref")
    data = facts(
        provider="postmark",
        reason=record.get("Type") or record.get("SuppressionReason"),
        code=record.get("TypeCode"),
        description=record.get("Description"),
        details=record.get("Details"),
        url=record.get("OriginalLink"),
    )
    return Report(kind, ref, event_id, parse_time_us(when), data)

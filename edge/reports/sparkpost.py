"""SparkPost event webhooks (a JSON array of `{"msys": {...}}` events): `POST /reports/email/sparkpost`.

Auth: SparkPost signs nothing; a webhook authenticates with what it is configured to send.
Two forms are read: HTTP basic auth (the webhook's `auth_type: basic`,
TRACKER_REPORT_SPARKPOST_BASIC_AUTH=USER:PASSWORD) and the older auth token it presents
in `X-MessageSystems-Webhook-Token` (TRACKER_REPORT_SPARKPOST_WEBHOOK_TOKEN). Either
enables the route; when both are set, both must match. OAuth2 is not supported. Both are
checked before the body is read. Content-Type: application/json.

Mapping, by the event's `type`: delivery -> delivered; bounce and out_of_band by
`bounce_class`, following SparkPost's own categories: Hard (10, 30, 90) -> hard_bounce,
Admin (25, 26: SparkPost's policy or suppression refused it) -> undelivered, replies that
are not failures (60 auto-reply, 80 subscribe, 100 challenge-response) are not tracked,
the rest (Soft, Block, Undetermined) -> soft_bounce; delay -> deferred;
policy_rejection, generation_failure, generation_rejection -> undelivered;
spam_complaint -> complained; open, initial_open, amp_open, amp_initial_open -> opened;
click, amp_click -> clicked; list_unsubscribe, link_unsubscribe -> unsubscribed.
Injection, relay, A/B test and anything else, and the empty `{"msys": {}}` entries of
SparkPost's test batch, are counted as not tracked.
The ref: `rcpt_meta.tracker_ref` (recipient metadata, or transmission metadata, which
SparkPost merges into it). The provider event id is `event_id`; the time is `timestamp`
(Unix seconds).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec
from starlette.datastructures import Headers

from edge.reports.base import BasicAuth, Report, ReportRequest, facts, malformed, parse_time_us, unauthorized
from tracker.config import Settings

TOKEN_HEADER = "x-messagesystems-webhook-token"
_KINDS = {
    "delivery": "delivered",
    "delay": "deferred",
    "policy_rejection": "undelivered",
    "generation_failure": "undelivered",
    "generation_rejection": "undelivered",
    "spam_complaint": "complained",
    "open": "opened",
    "initial_open": "opened",
    "amp_open": "opened",
    "amp_initial_open": "opened",
    "click": "clicked",
    "amp_click": "clicked",
    "list_unsubscribe": "unsubscribed",
    "link_unsubscribe": "unsubscribed",
}
_HARD = frozenset({"10", "30", "90"})
_ADMIN = frozenset({"25", "26"})
_NOT_FAILURES = frozenset({"60", "80", "100"})


class SparkPostEvents:
    channel = "email"
    name = "sparkpost"
    content_types = frozenset({"application/json"})

    def __init__(self, auth: BasicAuth | None, token: str) -> None:
        self.auth = auth
        self.token_digest = hashlib.sha256(token.encode()).digest() if token else None

    @classmethod
    def from_settings(cls, settings: Settings) -> SparkPostEvents | None:
        credentials, token = settings.reports.sparkpost_basic_auth, settings.reports.sparkpost_webhook_token
        if not credentials and not token:
            return None
        auth = BasicAuth("TRACKER_REPORT_SPARKPOST_BASIC_AUTH", credentials) if credentials else None
        return cls(auth, token)

    def check_headers(self, headers: Headers) -> None:
        if self.auth is not None:
            self.auth.check(headers)
        if self.token_digest is not None:
            given = headers.get(TOKEN_HEADER, "").encode()
            if not hmac.compare_digest(hashlib.sha256(given).digest(), self.token_digest):
                raise unauthorized("bad webhook token")

    async def reports(self, request: ReportRequest) -> list[Report]:
        self.check_headers(request.headers)
        try:
            batch = msgspec.json.decode(request.body)
        except msgspec.DecodeError:
            raise malformed("expected a SparkPost JSON array of events") from None
        if not isinstance(batch, list):
            raise malformed("expected a SparkPost JSON array of events")
        return [sparkpost_report(entry) for entry in batch]


_UNTRACKED = Report(None, None, "", 0)


def sparkpost_report(entry: Any) -> Report:
    """One `{"msys": {"<class>_event": {...}}}` entry as a report."""
    msys = entry.get("msys") if isinstance(entry, dict) else None
    if not isinstance(msys, dict):
        raise malformed("expected {\"msys\": {...}} entries")
    event = next((value for value in msys.values() if isinstance(value, dict)), None)
    if event is None:
        return _UNTRACKED  # SparkPost's test batch, or an event class with no body
    name = event.get("type")
    kind = _bounce_kind(event.get("bounce_class")) if name in ("bounce", "out_of_band") else _KINDS.get(str(name))
    if kind is None:
        return _UNTRACKED
    event_id = event.get("event_id")
    if not isinstance(event_id, str | int) or isinstance(event_id, bool) or event_id == "":
        raise malformed(f"{name} event without event_id")
    meta = event.get("rcpt_meta")
    ref = meta.get("tracker_ref") if isinstance(meta, dict) else None
    data = facts(
        provider="sparkpost",
        reason=event.get("reason") or event.get("raw_reason"),
        code=event.get("error_code"),
        bounce_class=event.get("bounce_class"),
        url=event.get("target_link_url"),
    )
    return Report(kind, ref if isinstance(ref, str) else None, str(event_id), parse_time_us(event.get("timestamp")),
                  data)  # fmt: skip


def _bounce_kind(bounce_class: Any) -> str | None:
    code = str(bounce_class)
    if code in _HARD:
        return "hard_bounce"
    if code in _ADMIN:
        return "undelivered"
    if code in _NOT_FAILURES:
        return None
    return "soft_bounce"

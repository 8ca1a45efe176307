"""Twilio Messaging status callbacks: `POST /hooks/sms/twilio?tracker_ref=<ref>`.

Auth: `X-Twilio-Signature` = base64 HMAC-SHA1, keyed with the auth token
(TRACKER_REPORT_TWILIO_AUTH_TOKEN), over the full URL Twilio called
(TRACKER_PUBLIC_URL + path + query) followed by every POST parameter, sorted by
name, as name + value. TRACKER_PUBLIC_URL must therefore be exactly the
scheme://host[:port] Twilio is configured with. A request without the header, or not
form-encoded, is refused before its body is read.

The ref: the sender sets StatusCallback to `.../hooks/sms/twilio?tracker_ref=<ref>`.
Mapping by MessageStatus: delivered -> delivered; undelivered, failed -> undelivered
with {"code": ErrorCode}; queued, sent, read and the rest are not tracked.
The provider event id is MessageSid + status. Twilio sends no event time: the time is
RawDlrDoneDate (the carrier's, minute precision) when present, else when this
process first saw that id. In that case the event id carries no time
(tracker.contract.events.TIMELESS_ID_PREFIX): a retry reaching another edge process gets
another time but the same id, and the flusher stores it once.
"""

from __future__ import annotations

import base64
import hmac
from collections import OrderedDict
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from starlette.datastructures import Headers

from edge.reports.base import Report, ReportRequest, facts, malformed, now_us, same, unauthorized
from tracker.config import Settings

_KINDS = {"delivered": "delivered", "undelivered": "undelivered", "failed": "undelivered"}
_FIRST_SEEN_MAX = 100_000


def sign(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    data = url + "".join(name + value for name, value in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), "sha1").digest()).decode()


def carrier_time_us(raw: str) -> int | None:
    """RawDlrDoneDate, `YYMMDDhhmm` in UTC, as microseconds; None when absent or odd."""
    try:
        moment = datetime.strptime(raw.strip(), "%y%m%d%H%M").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(moment.timestamp()) * 1_000_000


class FirstSeen:
    """When this process first saw a provider event id: a stand-in time for providers that send none."""

    def __init__(self, max_entries: int = _FIRST_SEEN_MAX) -> None:
        self.max_entries = max_entries
        self._seen: OrderedDict[str, int] = OrderedDict()

    def time_us(self, key: str) -> int:
        ts = self._seen.get(key)
        if ts is None:
            ts = self._seen[key] = now_us()
            if len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
        return ts


class TwilioStatusCallbacks:
    channel = "sms"
    name = "twilio"
    content_types = frozenset({"application/x-www-form-urlencoded"})

    def __init__(self, auth_token: str, public_url: str) -> None:
        self.auth_token = auth_token
        self.public_url = public_url
        self.first_seen = FirstSeen()

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioStatusCallbacks | None:
        token = settings.reports.twilio_auth_token
        return cls(token, settings.public_url) if token else None

    def check_headers(self, headers: Headers) -> None:
        if not headers.get("x-twilio-signature"):
            raise unauthorized("X-Twilio-Signature required")

    async def reports(self, request: ReportRequest) -> list[Report]:
        try:
            params = parse_qsl(request.body.decode(), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise malformed("expected a form-encoded body") from None
        url = self.public_url + request.path + (f"?{request.query_string}" if request.query_string else "")
        if not same(sign(self.auth_token, url, params), request.headers.get("x-twilio-signature", "")):
            raise unauthorized()
        form = dict(params)
        sid, status = form.get("MessageSid") or form.get("SmsSid"), form.get("MessageStatus") or form.get("SmsStatus")
        if not sid or not status:
            raise malformed("MessageSid and MessageStatus required")
        event_id = f"{sid}:{status}"
        carrier_us = carrier_time_us(form.get("RawDlrDoneDate", ""))
        ts_us = carrier_us or self.first_seen.time_us(event_id)
        data = facts(provider="twilio", status=status, code=form.get("ErrorCode"))
        return [Report(_KINDS.get(status), request.query.get("tracker_ref"), event_id, ts_us, data,
                       arrival_time=carrier_us is None)]  # fmt: skip

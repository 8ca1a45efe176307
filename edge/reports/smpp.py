"""SMPP delivery receipts relayed by an SMS gateway: `POST /hooks/sms/smpp?tracker_ref=<ref>`.

Body (Content-Type text/plain, 415 otherwise): the receipt text of SMPP v3.4 appendix B, one receipt per line:

    id:0123456789 sub:001 dlvrd:001 submit date:2405311200 done date:2405311201 stat:DELIVRD err:000 text:Hello

Auth: HTTP basic auth with TRACKER_REPORT_SMPP_BASIC_AUTH (USER:PASSWORD); most
gateways (Kannel, Jasmin, in-house relays) can put credentials into their DLR URL.
The ref: the gateway is given a per-message DLR URL carrying `tracker_ref=<ref>`.
Mapping by stat: DELIVRD -> delivered; UNDELIV, REJECTD, EXPIRED, DELETED ->
undelivered with {"code": err}; ACCEPTD, ENROUTE, UNKNOWN are not tracked.
Times: `done date` (YYMMDDhhmm or YYMMDDhhmmss), read as UTC.
The provider event id is the receipt's id + stat.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from starlette.datastructures import Headers

from edge.reports.base import BasicAuth, Report, ReportRequest, facts, malformed
from tracker.config import Settings

_RECEIPT = re.compile(
    r"id:(?P<id>\S+)\s+sub:(?P<sub>\d+)\s+dlvrd:(?P<dlvrd>\d+)\s+submit date:(?P<submit>\d{10,12})\s+"
    r"done date:(?P<done>\d{10,12})\s+stat:(?P<stat>[A-Za-z]+)\s+err:(?P<err>\w+)",
    re.IGNORECASE | re.ASCII,  # ASCII digits: strptime would read other scripts' digits too
)
_KINDS = {"DELIVRD": "delivered", "UNDELIV": "undelivered", "REJECTD": "undelivered", "EXPIRED": "undelivered",
          "DELETED": "undelivered"}  # fmt: skip


def receipt_time_us(text: str) -> int:
    try:
        moment = datetime.strptime(text, "%y%m%d%H%M%S" if len(text) == 12 else "%y%m%d%H%M")
    except ValueError:
        raise malformed("bad done date") from None
    return int(moment.replace(tzinfo=UTC).timestamp()) * 1_000_000


class SmppReceipts:
    channel = "sms"
    name = "smpp"
    content_types = frozenset({"text/plain"})

    def __init__(self, auth: BasicAuth) -> None:
        self.auth = auth

    @classmethod
    def from_settings(cls, settings: Settings) -> SmppReceipts | None:
        credentials = settings.reports.smpp_basic_auth
        return cls(BasicAuth("TRACKER_REPORT_SMPP_BASIC_AUTH", credentials)) if credentials else None

    def check_headers(self, headers: Headers) -> None:
        self.auth.check(headers)

    async def reports(self, request: ReportRequest) -> list[Report]:
        self.auth.check(request.headers)
        try:
            lines = [line for line in request.body.decode().splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise malformed("expected receipt text") from None
        if not lines:
            raise malformed("no receipt")
        ref = request.query.get("tracker_ref")
        reports = []
        for line in lines:
            match = _RECEIPT.search(line)
            if match is None:
                raise malformed("not an SMPP delivery receipt")
            stat = match["stat"].upper()
            data = facts(provider="smpp", status=stat, code=match["err"])
            reports.append(Report(_KINDS.get(stat), ref, f"{match['id']}:{stat}", receipt_time_us(match["done"]), data))
        return reports

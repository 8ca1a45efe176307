"""Vonage (Nexmo) Messages API status webhooks for SMS: `POST /reports/sms/vonage`.

Auth: the Messages API's signed webhooks, the one form supported. Each request carries
`Authorization: Bearer <JWT>`, signed HS256 with the account's signature secret
(TRACKER_REPORT_VONAGE_SIGNATURE_SECRET); its `iat` must be within
TRACKER_REPORT_MAX_SKEW_S and its `payload_hash` claim must be the hex SHA-256 of the raw
body, so a token cannot be moved onto another body. The token (algorithm, signature, iat)
is checked before the body is read. Only HS256 is taken: a token naming another algorithm
(or `none`) gets 401. The SMS API's delivery receipts, signed with a `sig` parameter over
the sorted parameters, are not supported: send SMS through the Messages API. Vonage notes
that on an internal error it may send one unsigned callback; that one gets 401 and is lost.

Body (Content-Type application/json): one status, e.g.
    {"message_uuid": "...", "to": "447700900000", "from": "...", "timestamp": "2024-05-31T16:08:37.000Z",
     "status": "rejected", "error": {"title": 1320, "detail": "..."}, "client_ref": "<ref>", "channel": "sms"}
Mapping by status: delivered -> delivered; rejected and undeliverable -> undelivered with
the error's title as the code; submitted and read are not tracked.
The ref: `client_ref` (up to 100 characters; send the X-Tracker-Ref in it), else a
`tracker_ref` query parameter on the status URL. The provider event id is message_uuid +
status; the time is `timestamp`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from typing import Any

import msgspec
from starlette.datastructures import Headers

from edge.reports.base import Report, ReportRequest, facts, malformed, parse_time_us, unauthorized
from tracker.config import Settings

_KINDS = {"delivered": "delivered", "rejected": "undelivered", "undeliverable": "undelivered"}
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


def _b64url(segment: str) -> bytes:
    if not _SEGMENT.fullmatch(segment):
        raise unauthorized("malformed token")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise unauthorized("malformed token") from None


def sign_jwt(secret: str, claims: dict[str, Any], algorithm: str = "HS256") -> str:
    """An HS256 JWT as Vonage makes one (also used by the tests)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(msgspec.json.encode(value)).rstrip(b"=").decode()

    signing_input = part({"alg": algorithm, "typ": "JWT"}) + "." + part(claims)
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


class VonageStatusWebhooks:
    channel = "sms"
    name = "vonage"
    content_types = frozenset({"application/json"})

    def __init__(self, secret: str, max_skew_s: int) -> None:
        self.secret = secret.encode()
        self.max_skew_s = max_skew_s

    @classmethod
    def from_settings(cls, settings: Settings) -> VonageStatusWebhooks | None:
        secret = settings.reports.vonage_signature_secret
        return cls(secret, settings.reports.max_skew_s) if secret else None

    def check_headers(self, headers: Headers) -> None:
        self._claims(headers)

    def _claims(self, headers: Headers) -> dict[str, Any]:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.count(".") != 2:
            raise unauthorized("signed webhook (Authorization: Bearer) required")
        header_part, claims_part, signature_part = token.strip().split(".")
        try:
            header = msgspec.json.decode(_b64url(header_part))
            claims = msgspec.json.decode(_b64url(claims_part))
        except msgspec.DecodeError:
            raise unauthorized("malformed token") from None
        if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
            raise unauthorized("expected an HS256 token")
        expected = hmac.new(self.secret, f"{header_part}.{claims_part}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _b64url(signature_part)):
            raise unauthorized()
        issued = claims.get("iat")
        if isinstance(issued, bool) or not isinstance(issued, int | float) or not 0 < issued < 1e11:
            raise unauthorized("token without a usable iat")
        if abs(time.time() - issued) > self.max_skew_s:
            raise unauthorized("token outside the allowed clock skew")
        return claims

    async def reports(self, request: ReportRequest) -> list[Report]:
        claims = self._claims(request.headers)
        given = claims.get("payload_hash")
        body_hash = hashlib.sha256(request.body).hexdigest()
        if not isinstance(given, str) or not hmac.compare_digest(given.lower().encode(), body_hash.encode()):
            raise unauthorized("payload_hash does not match the body")
        try:
            status = msgspec.json.decode(request.body)
        except msgspec.DecodeError:
            raise malformed("expected a Vonage status JSON object") from None
        if not isinstance(status, dict):
            raise malformed("expected a Vonage status JSON object")
        return [vonage_report(status, request.query.get("tracker_ref"))]


def vonage_report(status: dict[str, Any], query_ref: str | None) -> Report:
    uuid, name = status.get("message_uuid"), status.get("status")
    if not isinstance(uuid, str) or not uuid or not isinstance(name, str) or not name:
        raise malformed("message_uuid and status required")
    error = status.get("error") if isinstance(status.get("error"), dict) else {}
    destination = status.get("destination") if isinstance(status.get("destination"), dict) else {}
    ref = status.get("client_ref")
    data = facts(provider="vonage", status=name, code=error.get("title"), reason=error.get("detail"),
                 network=destination.get("network_code"))  # fmt: skip
    return Report(_KINDS.get(name), ref if isinstance(ref, str) and ref else query_ref, f"{uuid}:{name}",
                  parse_time_us(status.get("timestamp")), data)  # fmt: skip

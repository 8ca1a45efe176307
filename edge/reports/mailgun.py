"""Mailgun webhooks (JSON, one event per request): `POST /hooks/email/mailgun`.

Auth: the body's `signature` object: `signature` = hex HMAC-SHA256 over
timestamp + token with the HTTP webhook signing key (TRACKER_REPORT_MAILGUN_SIGNING_KEY),
timestamp within TRACKER_REPORT_MAX_SKEW_S. The signature does not cover the event, so a
captured signature block would verify on any body: each token is accepted once. Used tokens
are kept in Redis (`SET NX`, until the timestamp leaves the skew window) and a token seen
again gets 401. While Redis cannot say whether a token is new, the request gets 503 with
Retry-After (fail closed: Mailgun retries for hours, re-signed, so nothing is lost, while
accepting would reopen the replay for as long as Redis is away).

Mapping: delivered -> delivered, failed/permanent -> hard_bounce, failed/temporary ->
soft_bounce, rejected -> undelivered, complained -> complained, opened -> opened,
clicked -> clicked, unsubscribed -> unsubscribed; accepted and stored are not tracked.
The ref: the `tracker_ref` user variable (send with `v:tracker_ref` or
`X-Mailgun-Variables`), else an X-Tracker-Ref in `message.headers`.
The provider event id is `event-data.id`; an event without one gets an id made from the
event itself (a hash of `event-data`, which a redelivery repeats; the signature changes).
Content-Type: application/json (the legacy form-encoded webhooks are not supported).
A time that is not a date gets 400.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.datastructures import Headers

from edge.reports.base import (
    Report,
    ReportError,
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
_canonical = msgspec.json.Encoder(order="sorted").encode


def used_token_key(prefix: str, token: str) -> str:
    # Hashed: the token comes from the body and could be long.
    return f"{prefix}:reports:mailgun:token:{hashlib.sha256(token.encode()).hexdigest()[:32]}"


def sign(signing_key: str, timestamp: str, token: str) -> str:
    return hmac_hex(signing_key.encode(), (timestamp + token).encode())


class MailgunEvents:
    channel = "email"
    name = "mailgun"
    content_types = frozenset({"application/json"})

    def __init__(self, signing_key: str, max_skew_s: int, redis: Redis, prefix: str) -> None:
        self.signing_key = signing_key
        self.max_skew_s = max_skew_s
        self.redis = redis
        self.prefix = prefix

    @classmethod
    def from_settings(cls, settings: Settings, redis: Redis) -> MailgunEvents | None:
        key = settings.reports.mailgun_signing_key
        return cls(key, settings.reports.max_skew_s, redis, settings.stream_prefix) if key else None

    def check_headers(self, headers: Headers) -> None:
        """Nothing to check before the body: Mailgun's signature is in it."""

    async def reports(self, request: ReportRequest) -> list[Report]:
        # The signature lives in the body: a body that does not parse cannot be authenticated.
        try:
            hook = _decode(request.body)
        except msgspec.DecodeError:
            raise unauthorized("expected a signed Mailgun JSON webhook") from None
        signed = hook.signature
        if not same(sign(self.signing_key, signed.timestamp, signed.token), signed.signature):
            raise unauthorized()
        signed_at = check_fresh(signed.timestamp, self.max_skew_s)
        await self._first_use(signed.token, signed_at)
        return [mailgun_report(hook.event_data)]

    async def _first_use(self, token: str, signed_at: float) -> None:
        # Kept until the timestamp is too old to pass check_fresh: after that the token cannot come back.
        ttl_s = max(1, int(signed_at + self.max_skew_s - time.time()) + 1)
        try:
            first = await self.redis.set(used_token_key(self.prefix, token), b"1", nx=True, ex=ttl_s)
        except (RedisError, OSError):
            raise ReportError(503, "cannot check the Mailgun token now", {"retry-after": "30"}) from None
        if not first:
            raise unauthorized("Mailgun token already used")


def mailgun_report(event: dict[str, Any]) -> Report:
    name, event_id = event.get("event"), event.get("id")
    if not isinstance(name, str):
        raise malformed("event-data needs an event")
    if not isinstance(event_id, str) or not event_id:
        event_id = "sha256:" + hashlib.sha256(_canonical(event)).hexdigest()
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

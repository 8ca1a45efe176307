"""HTTP destination: one signed JSON POST per delivery; 2xx acknowledges, anything else is retried.

Body: `{"batch_id": "...", "hook_id": 1, "events": [{"id": "<uuid>", "kind": ..., ...}]}`.
Headers: `X-Tracker-Batch-Id` and `Idempotency-Key` (the batch id), `X-Tracker-Timestamp`
(Unix seconds) and, with a secret, `X-Tracker-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
A receiver checks the signature and the timestamp's age, then dedupes on the event ids.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlsplit

import httpx

from forwarder.delivery import NO_ANSWER, REFUSED, Delivery, DeliveryFailed
from tracker.domain.destination_policy import DestinationPolicy, DestinationRefused
from tracker.domain.hook_definitions import RESERVED_HEADERS, HttpDestination, encode_json, event_document

USER_AGENT = "tracking-edge-hooks/1"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class HttpPost:
    def __init__(self, spec: HttpDestination, policy: DestinationPolicy) -> None:
        self.spec = spec
        self.policy = policy
        parts = urlsplit(spec.url)
        self.host, self.port = parts.hostname or "", parts.port or _DEFAULT_PORTS[parts.scheme]
        self.url = httpx.URL(spec.url)
        # Connecting to an address, the receiver still sees its name: in Host, and in TLS (SNI, certificate).
        self.host_header = self.url.netloc.decode()
        self.extensions = {"sni_hostname": self.host} if self.url.scheme == "https" else None
        # Rows written before the Host header was refused may still hold one: never sent.
        self.headers = {name: value for name, value in spec.headers.items() if name.lower() not in RESERVED_HEADERS}
        # trust_env off: a proxy from the environment would resolve the name itself, past the check.
        self.client = httpx.AsyncClient(timeout=spec.timeout_s, follow_redirects=False, trust_env=False)

    async def _pinned_url(self) -> httpx.URL:
        """The URL aimed at an address the policy checked just now (not resolved again by the client)."""
        try:
            addresses = await self.policy.resolve(self.host, self.port)
        except DestinationRefused as exc:
            raise DeliveryFailed(f"HTTP: destination not allowed ({exc})", answer=REFUSED) from None
        except OSError as exc:
            raise DeliveryFailed("HTTP: no answer (connect failed or timed out)", answer=NO_ANSWER,
                                 detail=f"HTTP: {exc}") from None  # fmt: skip
        return self.url.copy_with(host=addresses[0])

    async def send(self, delivery: Delivery) -> str:
        body = encode_json({
            "batch_id": delivery.batch_id,
            "hook_id": delivery.hook_id,
            "events": [event_document(event) for event in delivery.events],
        })  # fmt: skip
        timestamp = str(int(time.time()))
        url = await self._pinned_url()
        headers = {
            **self.headers,
            "host": self.host_header,
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "x-tracker-hook-id": str(delivery.hook_id),
            "x-tracker-batch-id": delivery.batch_id,
            "idempotency-key": delivery.batch_id,
            "x-tracker-timestamp": timestamp,
        }
        if self.spec.secret:
            headers["x-tracker-signature"] = signature(self.spec.secret, timestamp, body)
        try:
            response = await self.client.post(url, content=body, headers=headers, extensions=self.extensions)
        except httpx.HTTPError as exc:
            # Refused, timed out, reset, not HTTP: one text, so a test cannot tell open ports from closed ones.
            raise DeliveryFailed("HTTP: no answer (connect failed or timed out)", answer=NO_ANSWER,
                                 detail=f"HTTP: {type(exc).__name__}: {exc}") from None  # fmt: skip
        answer = f"{response.status_code // 100}xx"
        if not 200 <= response.status_code < 300:
            # The body is the receiver's: kept out of last_error (shown to read-only keys), logged only.
            raise DeliveryFailed(f"HTTP {response.status_code}", answer=answer,
                                 detail=f"HTTP {response.status_code}: {response.text[:200]!r}")  # fmt: skip
        return answer

    async def close(self) -> None:
        await self.client.aclose()

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

import httpx

from forwarder.delivery import Delivery, DeliveryFailed
from tracker.domain.hook_definitions import HttpDestination, encode_json, event_document

USER_AGENT = "tracking-edge-hooks/1"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class HttpPost:
    def __init__(self, spec: HttpDestination) -> None:
        self.spec = spec
        self.client = httpx.AsyncClient(timeout=spec.timeout_s, follow_redirects=False)

    async def send(self, delivery: Delivery) -> str:
        body = encode_json({
            "batch_id": delivery.batch_id,
            "hook_id": delivery.hook_id,
            "events": [event_document(event) for event in delivery.events],
        })  # fmt: skip
        timestamp = str(int(time.time()))
        headers = {
            **self.spec.headers,
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
            response = await self.client.post(self.spec.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise DeliveryFailed(f"HTTP: no answer within {self.spec.timeout_s}s ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"HTTP: {type(exc).__name__}: {exc}") from None
        if not 200 <= response.status_code < 300:
            text = response.text[:200].replace("\n", " ")
            raise DeliveryFailed(f"HTTP {response.status_code}: {text}")
        return f"HTTP {response.status_code}"

    async def close(self) -> None:
        await self.client.aclose()

"""Amazon SNS HTTP(S) deliveries: signature verification and the subscription handshake.

SNS signs a canonical string of the message's fields with the key of a certificate
it publishes at SigningCertURL: RSA PKCS#1 v1.5 with SHA-1 (SignatureVersion 1) or
SHA-256 (SignatureVersion 2). The certificate URL is taken only when it matches
TRACKER_REPORT_SNS_CERT_URL_PATTERN (by default `https://sns.<region>.amazonaws.com/...pem`),
so a forged message cannot point us at a key of its own; certificates are cached.
A SubscriptionConfirmation is confirmed by fetching its SubscribeURL, again only for
URLs matching TRACKER_REPORT_SNS_SUBSCRIBE_URL_PATTERN and only for allowed topics.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from datetime import UTC, datetime
from re import Pattern
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from edge.reports.base import ReportError, malformed, unauthorized

log = logging.getLogger("edge.reports.sns")

_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
_FETCH_TIMEOUT_S = 5.0
_MAX_CERT_BYTES = 64 * 1024
_CERT_TTL_S = 24 * 3600.0
_MAX_CERTS = 16  # SNS uses one certificate per region at a time


def string_to_sign(message: dict[str, Any]) -> bytes:
    """SNS's canonical form: `name\\nvalue\\n` for each signed field present, in this order."""
    fields = _SIGNED_FIELDS.get(message.get("Type", ""))
    if fields is None:
        raise malformed("unknown SNS message Type")
    parts = []
    for name in fields:
        value = message.get(name)
        if value is None:
            if name == "Subject":
                continue  # the only optional field
            raise malformed(f"SNS message without {name}")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode()


class SnsVerifier:
    """Checks SNS signatures against certificates fetched (and cached) from allowed URLs only."""

    def __init__(self, cert_url: Pattern[str], subscribe_url: Pattern[str]) -> None:
        self.cert_url = cert_url
        self.subscribe_url = subscribe_url
        self._certs: dict[str, tuple[rsa.RSAPublicKey, float]] = {}

    async def verify(self, message: dict[str, Any]) -> None:
        version = str(message.get("SignatureVersion", ""))
        algorithm = _HASHES.get(version)
        if algorithm is None:
            raise unauthorized("unsupported SNS SignatureVersion")
        cert_url = message.get("SigningCertURL") or message.get("SigningCertUrl") or ""
        if not isinstance(cert_url, str) or not self.cert_url.match(cert_url):
            raise unauthorized("SigningCertURL not allowed")
        try:
            signature = base64.b64decode(message.get("Signature", ""), validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise unauthorized("bad SNS Signature") from None
        data = string_to_sign(message)
        key = await self._public_key(cert_url)
        try:
            key.verify(signature, data, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise unauthorized() from None

    async def confirm(self, message: dict[str, Any]) -> None:
        """Answer a SubscriptionConfirmation by fetching its SubscribeURL (signature already checked)."""
        url = message.get("SubscribeURL", "")
        if not isinstance(url, str) or not self.subscribe_url.match(url):
            raise unauthorized("SubscribeURL not allowed")
        try:
            async with httpx.AsyncClient(timeout=_FETCH_TIMEOUT_S, follow_redirects=False) as client:
                response = await client.get(url)
        except httpx.HTTPError as exc:
            log.warning("SNS subscription to %s not confirmed: %r", message.get("TopicArn"), exc)
            raise ReportError(502, "could not confirm the subscription") from None
        if response.status_code != 200:
            log.warning("SNS subscription to %s not confirmed: HTTP %d", message.get("TopicArn"), response.status_code)
            raise ReportError(502, "could not confirm the subscription")
        log.warning("SNS subscription to %s confirmed", message.get("TopicArn"))

    async def _public_key(self, url: str) -> rsa.RSAPublicKey:
        now = time.monotonic()
        cached = self._certs.get(url)
        if cached is not None and cached[1] > now:
            return cached[0]
        key = await self._fetch_key(url)
        if len(self._certs) >= _MAX_CERTS:
            self._certs.pop(next(iter(self._certs)))
        self._certs[url] = (key, now + _CERT_TTL_S)
        return key

    async def _fetch_key(self, url: str) -> rsa.RSAPublicKey:
        # A fetch failure may hide a genuine message: 503 makes SNS retry it later.
        try:
            async with (
                httpx.AsyncClient(timeout=_FETCH_TIMEOUT_S, follow_redirects=False) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise ReportError(503, "SNS signing certificate unavailable")
                pem = b""
                async for chunk in response.aiter_bytes():
                    pem += chunk
                    if len(pem) > _MAX_CERT_BYTES:
                        raise unauthorized("SNS signing certificate too large")
        except httpx.HTTPError as exc:
            log.warning("SNS signing certificate %s unavailable: %r", url, exc)
            raise ReportError(503, "SNS signing certificate unavailable") from None
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise unauthorized("SNS signing certificate unreadable") from None
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise unauthorized("SNS signing certificate is not RSA")
        if not cert.not_valid_before_utc <= datetime.now(UTC) <= cert.not_valid_after_utc:
            raise unauthorized("SNS signing certificate expired")
        return key

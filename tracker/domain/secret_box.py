"""Hook secrets at rest: each secret value sealed on its own with AES-256-GCM under a key id.

A sealed value is the text `sealed:v1:<key id>:<base64url(nonce + ciphertext)>`,
bound (as associated data) to the field it belongs to, so a value cannot be moved
to another field or hook document and still open. Values are sealed one by one
rather than the whole document, so the API can keep a secret it was not sent
(a PATCH without it) by copying the sealed text, without ever opening it: only
the forwarder opens them (to deliver, and for a test delivery).

Keys come from TRACKER_HOOKS_SECRET_KEYS; new values are sealed with
TRACKER_HOOKS_SECRET_KEY_ID, and every listed key still opens what it sealed,
so keys rotate by adding one, making it current, and dropping the old one once
every hook was written again. Text without the prefix is a secret stored before
sealing existed: read as it is, sealed at the hook's next write.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tracker.config import Settings
from tracker.config.forwarder import secret_key_ring
from tracker.contract.numbers import parse_int
from tracker.contract.tokens import MAX_KEY_ID

_PREFIX = "sealed:v1:"
_NONCE_BYTES = 12


class SecretKeyMissing(Exception):
    """A secret cannot be sealed or opened with the configured keys; the message names the setting, no value."""


def is_sealed(value: str) -> bool:
    return value.startswith(_PREFIX)


class SecretBox:
    def __init__(self, keys: dict[int, bytes], key_id: int = -1) -> None:
        self._keys = {kid: AESGCM(key) for kid, key in keys.items()}
        self.key_id = (next(iter(keys)) if key_id == -1 else key_id) if keys else None

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        return cls(secret_key_ring(settings.forwarder.secret_keys), settings.forwarder.secret_key_id)

    @property
    def can_seal(self) -> bool:
        return self.key_id is not None

    def seal(self, value: str, field: str) -> str:
        """`value` sealed for `field` (a sealed value is returned as it is: it is already at rest)."""
        if is_sealed(value):
            return value
        if self.key_id is None:
            raise SecretKeyMissing("hook secrets are stored sealed: set TRACKER_HOOKS_SECRET_KEYS")
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[self.key_id].encrypt(nonce, value.encode(), field.encode())
        return f"{_PREFIX}{self.key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, value: str, field: str) -> str:
        """The secret in `value` (plain text stored before sealing is returned as it is)."""
        if not is_sealed(value):
            return value
        kid_text, _, payload = value.removeprefix(_PREFIX).partition(":")
        key_id = parse_int(kid_text, 0, MAX_KEY_ID)
        key = None if key_id is None else self._keys.get(key_id)
        if key is None:
            raise SecretKeyMissing(f"{field} is sealed with key {kid_text}, not in TRACKER_HOOKS_SECRET_KEYS")
        try:
            raw = base64.urlsafe_b64decode(payload)
            return key.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], field.encode()).decode()
        except (InvalidTag, ValueError):  # binascii.Error is a ValueError: text that only looks sealed
            raise SecretKeyMissing(f"{field} does not open with key {kid_text} (another key, or altered)") from None

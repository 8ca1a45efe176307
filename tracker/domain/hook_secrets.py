"""A hook's destination as Postgres holds it (`hooks.secrets`): its JSON with every secret value sealed.

Secret values: the HTTP signing secret and every header value (an `Authorization`
goes there), the AMQP URL (it carries the credentials) and Kafka's SASL password.
Each is sealed on its own (tracker.domain.secret_box). The API seals, and keeps a
secret an update left out by copying its sealed text; only the forwarder opens.
Without TRACKER_HOOKS_SECRET_KEYS a destination with a secret is refused rather
than stored in the clear (an AMQP URL without a password is no secret).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import msgspec

from tracker.domain.hook_definitions import Destination, encode_json, public_view, secret_hint
from tracker.domain.secret_box import SecretBox, is_sealed

Document = dict[str, Any]


def _secret_fields(doc: Document) -> Iterator[tuple[dict[str, Any], str, str]]:
    """(container, key, label) of each secret value present in a destination document."""
    kind = doc.get("type")
    if kind == "http":
        if doc.get("secret"):
            yield doc, "secret", "http.secret"
        headers = doc.get("headers") or {}
        for name in headers:
            yield headers, name, f"http.headers.{name}"
    elif kind == "amqp" and doc.get("url"):
        yield doc, "url", "amqp.url"
    elif kind == "kafka" and doc.get("sasl_password"):
        yield doc, "sasl_password", "kafka.sasl_password"


def _is_secret(label: str, value: str) -> bool:
    if label == "amqp.url":
        return is_sealed(value) or urlsplit(value).password is not None
    return True


def _seal_fields(doc: Document, box: SecretBox) -> bool:
    """Seal, in place, what is not sealed yet; True when something changed."""
    changed = False
    for container, key, label in _secret_fields(doc):
        value = container[key]
        if is_sealed(value) or not (box.can_seal or _is_secret(label, value)):
            continue
        container[key] = box.seal(value, label)  # without a key, SecretKeyMissing: never stored in the clear
        changed = True
    return changed


def seal_destination(destination: Destination, box: SecretBox, stored: str | None = None) -> str:
    """The `secrets` column for `destination`; with `stored` (the old column), secrets it left out are kept.

    The signing secret is kept for the same URL only: a new receiver gets a new secret or none.
    """
    doc: Document = msgspec.to_builtins(destination)
    old: Document = json.loads(stored) if stored else {}
    if old.get("type") == doc["type"] == "http" and old.get("url") == doc["url"]:
        if doc.get("secret") is None and old.get("secret"):
            doc["secret"] = old["secret"]
    if old.get("type") == doc["type"] == "kafka" and doc.get("sasl_password") is None and old.get("sasl_password"):
        doc["sasl_password"] = old["sasl_password"]
    _seal_fields(doc, box)
    return encode_json(doc).decode()


def stored_view(destination: Destination, stored: str) -> dict[str, Any]:
    """The `config` column: the destination as shown, secrets kept from before (in `stored`) showing as set."""
    view = public_view(destination)
    doc: Document = json.loads(stored)
    for name in ("secret", "sasl_password"):
        if name in view:
            view[name] = secret_hint(doc.get(name))
    return view


def reseal(stored: str, box: SecretBox) -> str | None:
    """The column with secrets stored in the clear (before sealing existed) sealed; None when nothing to do."""
    if not box.can_seal:
        return None
    doc: Document = json.loads(stored)
    return encode_json(doc).decode() if _seal_fields(doc, box) else None


def unseal_destination(stored: str, box: SecretBox) -> Destination:
    """The destination with its secrets, for the forwarder; SecretKeyMissing when a key is not configured."""
    doc: Document = json.loads(stored)
    for container, key, label in list(_secret_fields(doc)):
        container[key] = box.open(container[key], label)
    return msgspec.convert(doc, Destination)  # type: ignore[arg-type]


def has_clear_secrets(stored: str) -> bool:
    doc: Document = json.loads(stored)
    return any(_is_secret(label, c[k]) and not is_sealed(c[k]) for c, k, label in _secret_fields(doc))

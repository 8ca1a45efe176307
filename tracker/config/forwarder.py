"""The forwarder's settings: how action hooks are read, retried, paused and dead-lettered.

Each hook's own destination and secrets live in Postgres, not here.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass

from tracker.config._fields import SettingsError, SettingsPart, float_range, int_range, setting
from tracker.contract.numbers import parse_int
from tracker.contract.tokens import MAX_KEY_ID

_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"^\.?(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


def parse_allowed_destinations(raw: str) -> tuple[str, ...]:
    """`10.20.0.0/16,crm.internal,.corp.example` -> normalized CIDRs and lower-case names (".x": any name under x)."""
    entries = []
    for item in filter(None, (piece.strip() for piece in raw.split(","))):
        try:
            entries.append(str(ipaddress.ip_network(item, strict=False)))
            continue
        except ValueError:
            pass
        name = item.lower().rstrip(".")
        if not _HOST_NAME.match(name):
            raise ValueError(f"{item!r} is neither a CIDR (10.0.0.0/8, fd00::/8) nor a host name")
        entries.append(name)
    return tuple(entries)


def secret_key_ring(raw: str) -> dict[int, bytes]:
    """`1:<base64 of 32 bytes>,2:<older>` -> {1: key, 2: key}: AES-256-GCM keys for hook secrets at rest."""
    keys: dict[int, bytes] = {}
    for item in filter(None, (piece.strip() for piece in raw.split(","))):
        kid_text, sep, encoded = item.partition(":")
        key_id = parse_int(kid_text, 0, MAX_KEY_ID) if sep else None
        if key_id is None:
            raise ValueError(f"expected comma-separated KEY_ID:BASE64_KEY pairs with KEY_ID from 0 to {MAX_KEY_ID}")
        try:
            key = base64.b64decode(encoded.strip() + "=" * (-len(encoded.strip()) % 4), altchars=b"-_", validate=False)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise ValueError(f"key {key_id} is not 32 bytes in base64 (make one: openssl rand -base64 32)")
        keys[key_id] = key
    return keys


def _secret_keys(raw: str) -> str:
    # Kept as the text (hidden by its name wherever settings are shown), checked here, opened where used.
    secret_key_ring(raw)
    return raw


@dataclass(frozen=True, slots=True, repr=False)
class ForwarderSettings(SettingsPart):
    """What only the action-hook forwarder reads (`TRACKER_HOOKS_*`)."""

    consumer: str = setting(
        "TRACKER_HOOKS_CONSUMER", "", str, "hooks worker's consumer name in every hook group (empty: hostname-pid)"
    )
    read_entries: int = setting(
        "TRACKER_HOOKS_READ_ENTRIES", 10, int_range(1, 10_000), "committed-stream entries a hook takes per read"
    )
    retry_min_s: float = setting(
        "TRACKER_HOOKS_RETRY_MIN_S", 0.5, float_range(0.001, 3600), "first pause after a failed delivery (then doubled)"
    )
    retry_max_s: float = setting(
        "TRACKER_HOOKS_RETRY_MAX_S", 60.0, float_range(0.001, 86400), "longest pause between delivery tries"
    )
    pause_after_failures: int = setting(
        "TRACKER_HOOKS_PAUSE_AFTER_FAILURES", 10, int_range(0, 10**6),
        "consecutive failed tries after which a hook is set to failing (paused, backlog kept; 0: never)",
    )  # fmt: skip
    dead_letter_after_s: float = setting(
        "TRACKER_HOOKS_DEAD_LETTER_AFTER_S", 86400.0, float_range(0, 10**8),
        "a delivery still failing (3 tries at least) with events committed longer ago than this is dead-lettered",
    )  # fmt: skip
    dead_letter_max_len: int = setting(
        "TRACKER_HOOKS_DEAD_LETTER_MAX_LEN", 100_000, int_range(1, 10**9), "entries kept per hook dead-letter stream"
    )
    reload_s: float = setting(
        "TRACKER_HOOKS_RELOAD_S", 5.0, float_range(0.05, 3600), "how often the worker re-reads hook definitions"
    )
    claim_idle_ms: int = setting(
        "TRACKER_HOOKS_CLAIM_IDLE_MS",
        60_000,
        int_range(1, 10**9),
        "pending this long, an entry of another worker is taken",
    )
    heartbeat_ttl_s: int = setting(
        "TRACKER_HOOKS_HEARTBEAT_TTL_S", 30, int_range(2, 86400), "TTL of the hooks worker heartbeat key"
    )
    replay_max_events: int = setting(
        "TRACKER_HOOKS_REPLAY_MAX_EVENTS", 1_000_000, int_range(1, 10**9), "events one replay job may queue"
    )
    test_timeout_s: float = setting(
        "TRACKER_HOOKS_TEST_TIMEOUT_S", 5.0, float_range(0.1, 60),
        "longest a test delivery may take (the API waits this long for its answer, a second more at most)",
    )  # fmt: skip
    test_concurrency: int = setting(
        "TRACKER_HOOKS_TEST_CONCURRENCY", 4, int_range(1, 1000),
        "test deliveries running at once over all edges (more: 429)",
    )  # fmt: skip
    allowed_destinations: tuple[str, ...] = setting(
        "TRACKER_HOOKS_ALLOWED_DESTINATIONS", (), parse_allowed_destinations,
        "CIDRs and host names (.suffix for a domain) hooks may reach although private, loopback or link-local",
    )  # fmt: skip
    secret_keys: str = setting(
        "TRACKER_HOOKS_SECRET_KEYS", "", _secret_keys,
        "keys sealing hook secrets in Postgres as KEY_ID:BASE64(32 bytes),... (all open; the edge and forwarder)",
    )  # fmt: skip
    secret_key_id: int = setting(
        "TRACKER_HOOKS_SECRET_KEY_ID", -1, int_range(-1, 255),
        "key id that seals new hook secrets (-1: the first listed)",
    )  # fmt: skip

    def check(self) -> None:
        ring = secret_key_ring(self.secret_keys)
        if ring and self.secret_key_id != -1 and self.secret_key_id not in ring:
            raise SettingsError(
                f"TRACKER_HOOKS_SECRET_KEY_ID={self.secret_key_id}: no such key in TRACKER_HOOKS_SECRET_KEYS "
                f"(have {sorted(ring)})"
            )
        super(ForwarderSettings, self).check()

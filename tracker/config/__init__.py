"""One frozen settings object, read from the environment once and passed in.

Every value has a variable name, a parser and a default; a wrong value stops
start-up with a `SettingsError` that names the variable and what was expected.

`Settings` holds what every program shares (Redis, Postgres, stream names,
signing keys) and one part per program: `edge`, `reports` (provider reports,
served by the edge), `flusher` and `forwarder`. A program reads its own part;
`settings.replace(flusher={"batch_max_events": 100})` changes one field of one.
`python -m tracker.config` prints the table the README shows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tracker.config._fields import (
    SettingsError,
    SettingsPart,
    boolean,
    choice,
    cluster_url_refusal,
    float_range,
    int_range,
    is_secret,
    part,
    redact_url,
    setting,
    url,
)
from tracker.config.edge import EdgeSettings
from tracker.config.flusher import FlusherSettings
from tracker.config.forwarder import ForwarderSettings
from tracker.config.pages import PagesSettings
from tracker.config.reports import ReportSettings
from tracker.contract.numbers import parse_int
from tracker.contract.tokens import MAX_KEY_ID

__all__ = [
    "EdgeSettings",
    "FlusherSettings",
    "ForwarderSettings",
    "ReportSettings",
    "Settings",
    "SettingsError",
    "cluster_url_refusal",
    "is_secret",
    "parse_signing_keys",
    "redact_url",
    "settings_help",
]


def _public_url(raw: str) -> str:
    url("http", "https")(raw)
    return raw.rstrip("/")


def parse_signing_keys(raw: str) -> dict[int, bytes]:
    """`1:secret,2:older-secret` -> {1: b"secret", 2: b"older-secret"}."""
    keys: dict[int, bytes] = {}
    for item in filter(None, (piece.strip() for piece in raw.split(","))):
        kid_text, sep, secret = item.partition(":")
        key_id = parse_int(kid_text, 0, MAX_KEY_ID) if sep else None
        if key_id is None:  # one spelling per id: not "01", not another script's digits
            raise ValueError(f"expected comma-separated KEY_ID:SECRET pairs with KEY_ID from 0 to {MAX_KEY_ID}")
        if len(secret) < 16:
            raise ValueError(f"the secret of key {key_id} is shorter than 16 characters")
        keys[key_id] = secret.encode()
    if not keys:
        raise ValueError("expected at least one KEY_ID:SECRET pair")
    return keys


@dataclass(frozen=True, slots=True, repr=False)
class Settings(SettingsPart):
    """What every program shares, and one part per program."""

    redis_url: str = setting("REDIS_URL", "", url("redis", "rediss", "unix"), "Redis for streams and caches")
    database_url: str = setting("DATABASE_URL", "", url("postgres", "postgresql"), "Postgres, the source of truth")
    signing_keys: dict[int, bytes] = setting(
        "TRACKER_SIGNING_KEYS",
        {},
        parse_signing_keys,
        "token keys as KEY_ID:SECRET,... (all verify; see TRACKER_SIGNING_KEY_ID)",
    )
    signing_key_id: int = setting(
        "TRACKER_SIGNING_KEY_ID", -1, int_range(-1, 255), "key id that signs new tokens (-1: the first listed)"
    )
    public_url: str = setting(
        "TRACKER_PUBLIC_URL", "http://127.0.0.1:8000", _public_url, "base URL put into minted links"
    )
    stream_prefix: str = setting("TRACKER_STREAM_PREFIX", "trk", str, "prefix of every Redis key")
    stream_shards: int = setting("TRACKER_STREAM_SHARDS", 4, int_range(1, 1024), "event stream shards")
    redis_timeout_s: float = setting(
        "TRACKER_REDIS_TIMEOUT_S",
        1.0,
        float_range(0.01, 60),
        "Redis socket timeout (the flusher waits at least 10 s on reads)",
    )
    redis_cluster: bool = setting(
        "TRACKER_REDIS_CLUSTER", False, boolean, "Redis Cluster: REDIS_URL names any node, or a comma list of seeds"
    )
    redis_wait_replicas: int = setting(
        "TRACKER_REDIS_WAIT_REPLICAS",
        0,
        int_range(0, 5),
        "replicas each event batch must reach (WAIT) before the edge drops its copy (0: do not wait)",
    )
    log_level: str = setting(
        "TRACKER_LOG_LEVEL", "info", choice("debug", "info", "warning", "error"),
        "log level of edge, flusher and forwarder (their --log-level wins)",
    )  # fmt: skip
    log_format: str = setting(
        "TRACKER_LOG_FORMAT", "text", choice("text", "json"),
        "log lines: text, or json (one object per line: time, level, logger, message, exception)",
    )  # fmt: skip
    edge: EdgeSettings = part(EdgeSettings)
    reports: ReportSettings = part(ReportSettings)
    pages: PagesSettings = part(PagesSettings)
    flusher: FlusherSettings = part(FlusherSettings)
    forwarder: ForwarderSettings = part(ForwarderSettings)

    def check(self) -> None:
        if self.signing_keys and self.signing_key_id != -1 and self.signing_key_id not in self.signing_keys:
            raise SettingsError(
                f"TRACKER_SIGNING_KEY_ID={self.signing_key_id}: no such key in TRACKER_SIGNING_KEYS "
                f"(have {sorted(self.signing_keys)})"
            )
        if not self.stream_prefix or any(c in self.stream_prefix for c in "{} \r\n"):
            raise SettingsError("TRACKER_STREAM_PREFIX: expected a non-empty name without braces or spaces")
        refused = cluster_url_refusal(self.redis_url) if self.redis_cluster else None
        if refused:
            raise SettingsError(refused)
        super(Settings, self).check()

    @property
    def active_key_id(self) -> int:
        self.require("signing_keys")
        return next(iter(self.signing_keys)) if self.signing_key_id == -1 else self.signing_key_id


# Settings every program reads besides its own part.
SHARED = ("redis_url", "database_url", "stream_prefix", "stream_shards", "redis_timeout_s", "log_level", "log_format",
          "redis_cluster", "redis_wait_replicas")


def settings_help(*parts: str, shared: tuple[str, ...] | None = None, only_shared: bool = False) -> str:
    """One line per variable, for `--help` epilogs: the shared ones, then those of `parts` (all when none;
    none with `only_shared`)."""
    lines = []
    for part_name, f in Settings.described():
        if part_name:
            if only_shared or (parts and part_name not in parts):
                continue
        elif shared is not None and f.name not in shared:
            continue
        default: Any = f.default if f.default_factory is dataclasses.MISSING else "{}"  # type: ignore[misc]
        if f.name == "signing_keys":
            default = "none: required by the edge and token commands"
        lines.append(f"  {f.metadata['env']:<38} {f.metadata['doc']} [default: {default}]")
    return "\n".join(lines)

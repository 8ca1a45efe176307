"""One frozen settings object, read from the environment once and passed in.

Every value has a variable name, a parser and a default; a wrong value stops
start-up with a `SettingsError` that names the variable and what was expected.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw.replace("_", ""))
        if not lo <= value <= hi:
            raise ValueError(f"expected an integer from {lo} to {hi}")
        return value

    return parse


def _float(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not lo <= value <= hi:
            raise ValueError(f"expected a number from {lo} to {hi}")
        return value

    return parse


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return raw

    return parse


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes:
            raise ValueError(f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return raw

    return parse


def _optional_http_url(raw: str) -> str:
    if not raw:
        return ""
    from tracker.urls import check_redirect_url

    check_redirect_url(raw)
    return raw


def _public_url(raw: str) -> str:
    _url("http", "https")(raw)
    return raw.rstrip("/")


def parse_signing_keys(raw: str) -> dict[int, bytes]:
    """`1:secret,2:older-secret` -> {1: b"secret", 2: b"older-secret"}."""
    keys: dict[int, bytes] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        kid_text, sep, secret = item.partition(":")
        if not sep or not kid_text.isdigit() or not 0 <= int(kid_text) <= 255:
            raise ValueError("expected comma-separated KEY_ID:SECRET pairs with KEY_ID from 0 to 255")
        if len(secret) < 16:
            raise ValueError(f"the secret of key {kid_text} is shorter than 16 characters")
        keys[int(kid_text)] = secret.encode()
    if not keys:
        raise ValueError("expected at least one KEY_ID:SECRET pair")
    return keys


def _setting(env: str, default: Any, parse: Callable[[str], Any] = str, doc: str = "") -> Any:
    metadata = {"env": env, "parse": parse, "doc": doc}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str = _setting("REDIS_URL", "", _url("redis", "rediss", "unix"), "Redis for streams and caches")
    database_url: str = _setting(
        "DATABASE_URL", "", _url("postgres", "postgresql"), "Postgres, the source of truth"
    )
    signing_keys: dict[int, bytes] = _setting(
        "TRACKER_SIGNING_KEYS",
        {},
        parse_signing_keys,
        "token keys as KEY_ID:SECRET,... (all verify; see TRACKER_SIGNING_KEY_ID)",
    )
    signing_key_id: int = _setting(
        "TRACKER_SIGNING_KEY_ID", -1, _int(-1, 255), "key id that signs new tokens (-1: the first listed)"
    )
    public_url: str = _setting(
        "TRACKER_PUBLIC_URL", "http://127.0.0.1:8000", _public_url, "base URL put into minted links"
    )
    stream_prefix: str = _setting("TRACKER_STREAM_PREFIX", "trk", str, "prefix of every Redis key")
    stream_shards: int = _setting("TRACKER_STREAM_SHARDS", 4, _int(1, 1024), "event stream shards")
    stream_max_len: int = _setting(
        "TRACKER_STREAM_MAX_LEN",
        100_000,
        _int(1, 10**10),
        "stream entries (event batches) per shard above which the edge spools instead of adding to Redis",
    )
    batch_max_events: int = _setting("TRACKER_BATCH_MAX_EVENTS", 512, _int(1, 100_000), "XADD batch size")
    batch_max_bytes: int = _setting(
        "TRACKER_BATCH_MAX_BYTES", 262_144, _int(1024, 64 * 2**20), "XADD batch bytes"
    )
    batch_max_age_ms: float = _setting(
        "TRACKER_BATCH_MAX_AGE_MS", 5.0, _float(0.1, 10_000), "longest an event waits in the edge buffer"
    )
    spool_dir: Path = _setting("TRACKER_SPOOL_DIR", Path("var/spool"), Path, "edge spool folder")
    spool_max_bytes: int = _setting(
        "TRACKER_SPOOL_MAX_BYTES", 1 << 30, _int(4096, 1 << 44), "spool size bound per edge worker"
    )
    spool_fsync: str = _setting(
        "TRACKER_SPOOL_FSYNC",
        "interval",
        _choice("always", "interval", "never"),
        "always: fsync each batch; interval: once a second; never: leave it to the OS",
    )
    redis_timeout_s: float = _setting(
        "TRACKER_REDIS_TIMEOUT_S", 1.0, _float(0.01, 60), "Redis socket timeout at the edge"
    )
    redis_retry_s: float = _setting(
        "TRACKER_REDIS_RETRY_S", 1.0, _float(0.01, 600), "pause between Redis probes while spooling"
    )
    link_cache_size: int = _setting(
        "TRACKER_LINK_CACHE_SIZE", 4096, _int(1, 10**7), "link-table versions kept in each edge process"
    )
    link_cache_redis_ttl_s: int = _setting(
        "TRACKER_LINK_CACHE_REDIS_TTL_S", 7 * 86400, _int(1, 10**8), "TTL of link-table copies in Redis"
    )
    link_cache_negative_ttl_s: float = _setting(
        "TRACKER_LINK_CACHE_NEGATIVE_TTL_S",
        30.0,
        _float(0, 86400),
        "how long an edge remembers that a message or version does not exist",
    )
    fallback_url: str = _setting(
        "TRACKER_FALLBACK_URL", "", _optional_http_url, "where bad click links go (empty: a 404 page)"
    )
    max_path_len: int = _setting(
        "TRACKER_MAX_PATH_LEN", 512, _int(64, 8192), "longer request paths get 414 without work"
    )
    trust_forwarded_for: bool = _setting(
        "TRACKER_TRUST_FORWARDED_FOR", False, _bool, "take the client IP from X-Forwarded-For"
    )
    pg_pool_size: int = _setting("TRACKER_PG_POOL_SIZE", 4, _int(1, 1000), "Postgres pool size per process")
    site_keys: str = _setting(
        "TRACKER_SITE_KEYS", "", str, "comma-separated site keys the website pixel accepts (empty: pixel off)"
    )
    site_link_param: str = _setting(
        "TRACKER_SITE_LINK_PARAM", "", str,
        "query parameter a click adds to the landing URL with a signed ref for the website pixel (empty: off)",
    )
    site_max_bytes: int = _setting(
        "TRACKER_SITE_MAX_BYTES", 4096, _int(256, 65_536), "largest website pixel event (413 above)"
    )
    short_link_cache_size: int = _setting(
        "TRACKER_SHORT_LINK_CACHE_SIZE", 100_000, _int(1, 10**8), "SMS short codes kept in each edge process"
    )
    read_min_s: float = _setting(
        "TRACKER_READ_MIN_S", 10.0, _float(0, 3600), "dwell at /r/ from which an open counts as `read`"
    )
    read_max_s: float = _setting(
        "TRACKER_READ_MAX_S", 120.0, _float(1, 3600), "longest a /r/ read beacon is held open"
    )
    read_tick_s: float = _setting(
        "TRACKER_READ_TICK_S", 2.0, _float(0.05, 60), "a held read beacon sends one byte this often"
    )
    confirm_url: str = _setting(
        "TRACKER_CONFIRM_URL", "", _optional_http_url, "thank-you page after a double opt-in (empty: built-in)"
    )
    form_max_bytes: int = _setting(
        "TRACKER_FORM_MAX_BYTES", 65_536, _int(1024, 16 * 2**20), "largest unsubscribe/confirm POST body"
    )
    push_cors_origin: str = _setting(
        "TRACKER_PUSH_CORS_ORIGIN", "*", str, "Access-Control-Allow-Origin of the /p/ push callbacks"
    )
    # -- flusher --
    flusher_consumer: str = _setting(
        "FLUSHER_CONSUMER", "", str, "consumer name in the stream group (empty: hostname-pid)"
    )
    flusher_batch_max_events: int = _setting(
        "FLUSHER_BATCH_MAX_EVENTS", 10_000, _int(1, 1_000_000), "events per Postgres transaction, at most"
    )
    flusher_batch_max_bytes: int = _setting(
        "FLUSHER_BATCH_MAX_BYTES", 8 * 2**20, _int(1024, 2**30), "encoded bytes per batch, at most"
    )
    flusher_batch_max_age_ms: float = _setting(
        "FLUSHER_BATCH_MAX_AGE_MS", 200.0, _float(1, 60_000), "longest the first event of a batch waits"
    )
    flusher_claim_idle_ms: int = _setting(
        "FLUSHER_CLAIM_IDLE_MS", 60_000, _int(1, 10**9), "pending this long, an entry of another consumer is taken over"
    )
    flusher_claim_interval_s: float = _setting(
        "FLUSHER_CLAIM_INTERVAL_S", 15.0, _float(0.05, 86400), "how often to look for entries to take over"
    )
    flusher_heartbeat_ttl_s: int = _setting(
        "FLUSHER_HEARTBEAT_TTL_S", 30, _int(2, 86400), "TTL of the heartbeat key (refreshed every third of it)"
    )
    flusher_retry_min_s: float = _setting(
        "FLUSHER_RETRY_MIN_S", 0.2, _float(0.001, 600), "first pause after a Redis or Postgres failure"
    )
    flusher_retry_max_s: float = _setting(
        "FLUSHER_RETRY_MAX_S", 10.0, _float(0.001, 3600), "longest pause between retries (doubling up to it)"
    )
    flusher_shutdown_grace_s: float = _setting(
        "FLUSHER_SHUTDOWN_GRACE_S", 5.0, _float(0, 600), "on SIGTERM, how long to keep retrying the batch in hand"
    )
    flusher_partitions_ahead_days: int = _setting(
        "FLUSHER_PARTITIONS_AHEAD_DAYS", 7, _int(1, 366), "daily events partitions created ahead of today"
    )
    flusher_retention_days: int = _setting(
        "FLUSHER_RETENTION_DAYS", 400, _int(0, 100_000), "events partitions older than this are dropped (0: never)"
    )
    flusher_maintenance_interval_s: float = _setting(
        "FLUSHER_MAINTENANCE_INTERVAL_S", 3600.0, _float(1, 86400 * 7), "how often partitions are created/dropped"
    )
    flusher_soft_bounce_limit: int = _setting(
        "FLUSHER_SOFT_BOUNCE_LIMIT", 3, _int(1, 1000), "soft bounces within the window that make a hard bounce"
    )
    flusher_soft_bounce_window_s: int = _setting(
        "FLUSHER_SOFT_BOUNCE_WINDOW_S", 7 * 86400, _int(1, 10**8), "window of FLUSHER_SOFT_BOUNCE_LIMIT, seconds"
    )
    flusher_dead_letter_max_len: int = _setting(
        "FLUSHER_DEAD_LETTER_MAX_LEN", 100_000, _int(1, 10**9), "dead-letter stream length bound (approximate)"
    )
    flusher_synchronous_commit: bool = _setting(
        "FLUSHER_SYNCHRONOUS_COMMIT",
        True,
        _bool,
        "false trades durability for speed: a Postgres crash may lose acknowledged events",
    )
    flusher_pg_connections: int = _setting(
        "FLUSHER_PG_CONNECTIONS", 2, _int(1, 64), "batches written to Postgres at once, one connection each"
    )
    flusher_migrate: bool = _setting(
        "FLUSHER_MIGRATE", True, _bool, "apply schema migrations at start (safe with several flushers)"
    )
    # -- api --
    api_max_body_bytes: int = _setting(
        "TRACKER_API_MAX_BODY_BYTES", 4 * 2**20, _int(1024, 2**30), "largest JSON request body of the API (413 above)"
    )
    api_import_max_bytes: int = _setting(
        "TRACKER_API_IMPORT_MAX_BYTES", 2**30, _int(1024, 2**40), "largest profile import body (413 above)"
    )
    api_import_chunk_rows: int = _setting(
        "TRACKER_API_IMPORT_CHUNK_ROWS", 500, _int(1, 100_000), "import rows applied per transaction"
    )
    api_render_max_recipients: int = _setting(
        "TRACKER_API_RENDER_MAX_RECIPIENTS", 1000, _int(1, 1_000_000), "profiles per render request, at most"
    )
    api_short_link_ttl_s: int = _setting(
        "TRACKER_API_SHORT_LINK_TTL_S", 30 * 86400, _int(1, 10**8), "TTL of SMS short codes cached in Redis"
    )
    # -- webhooks --
    # Secrets are read as plain strings and checked when the edge builds its webhook
    # providers (edge.webhooks), so that a malformed one never gets echoed in an error.
    hook_max_body_bytes: int = _setting(
        "TRACKER_HOOK_MAX_BODY_BYTES", 2**20, _int(1024, 64 * 2**20), "largest webhook body (413 above)"
    )
    hook_max_skew_s: int = _setting(
        "TRACKER_HOOK_MAX_SKEW_S", 300, _int(1, 7 * 86400), "signed webhook timestamps further off than this get 401"
    )
    hook_generic_email_secret: str = _setting(
        "TRACKER_HOOK_GENERIC_EMAIL_SECRET", "", str, "HMAC secret of /hooks/email/generic (empty: disabled)"
    )
    hook_generic_sms_secret: str = _setting(
        "TRACKER_HOOK_GENERIC_SMS_SECRET", "", str, "HMAC secret of /hooks/sms/generic (empty: disabled)"
    )
    hook_ses_topic_arns: str = _setting(
        "TRACKER_HOOK_SES_TOPIC_ARNS", "", str, "comma-separated SNS topic ARNs of SES notifications (empty: disabled)"
    )
    hook_sns_cert_url_pattern: str = _setting(
        "TRACKER_HOOK_SNS_CERT_URL_PATTERN",
        r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[^?#@]+\.pem$",
        str,
        "regex an SNS SigningCertURL must match",
    )
    hook_sns_subscribe_url_pattern: str = _setting(
        "TRACKER_HOOK_SNS_SUBSCRIBE_URL_PATTERN",
        r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/\?",
        str,
        "regex an SNS SubscribeURL must match before the edge fetches it",
    )
    hook_sendgrid_public_key: str = _setting(
        "TRACKER_HOOK_SENDGRID_PUBLIC_KEY", "", str, "SendGrid signed event webhook verification key (empty: disabled)"
    )
    hook_mailgun_signing_key: str = _setting(
        "TRACKER_HOOK_MAILGUN_SIGNING_KEY", "", str, "Mailgun HTTP webhook signing key (empty: disabled)"
    )
    hook_postmark_basic_auth: str = _setting(
        "TRACKER_HOOK_POSTMARK_BASIC_AUTH", "", str, "USER:PASSWORD Postmark sends as basic auth (empty: disabled)"
    )
    hook_twilio_auth_token: str = _setting(
        "TRACKER_HOOK_TWILIO_AUTH_TOKEN", "", str, "Twilio auth token that signs status callbacks (empty: disabled)"
    )
    hook_smpp_basic_auth: str = _setting(
        "TRACKER_HOOK_SMPP_BASIC_AUTH", "", str, "USER:PASSWORD of SMPP delivery receipts (empty: disabled)"
    )
    # -- hooks --
    # Action hooks (outgoing): the secrets of each hook live in Postgres, not here.
    hooks_consumer: str = _setting(
        "TRACKER_HOOKS_CONSUMER", "", str, "hooks worker's consumer name in every hook group (empty: hostname-pid)"
    )
    hooks_check_interval_s: float = _setting(
        "TRACKER_HOOKS_CHECK_INTERVAL_S", 1.0, _float(0, 3600),
        "how long the flusher trusts its answer to 'does any hook exist' (a new hook waits up to this long)",
    )  # fmt: skip
    hooks_entry_max_events: int = _setting(
        "TRACKER_HOOKS_ENTRY_MAX_EVENTS", 1000, _int(1, 100_000), "events per committed-stream entry, at most"
    )
    hooks_read_entries: int = _setting(
        "TRACKER_HOOKS_READ_ENTRIES", 10, _int(1, 10_000), "committed-stream entries a hook takes per read"
    )
    hooks_retry_min_s: float = _setting(
        "TRACKER_HOOKS_RETRY_MIN_S", 0.5, _float(0.001, 3600), "first pause after a failed delivery (then doubled)"
    )
    hooks_retry_max_s: float = _setting(
        "TRACKER_HOOKS_RETRY_MAX_S", 60.0, _float(0.001, 86400), "longest pause between delivery tries"
    )
    hooks_pause_after_failures: int = _setting(
        "TRACKER_HOOKS_PAUSE_AFTER_FAILURES", 10, _int(0, 10**6),
        "consecutive failed tries after which a hook is set to failing (paused, backlog kept; 0: never)",
    )  # fmt: skip
    hooks_dead_letter_after_s: float = _setting(
        "TRACKER_HOOKS_DEAD_LETTER_AFTER_S", 86400.0, _float(0, 10**8),
        "a delivery still failing (3 tries at least) with events committed longer ago than this is dead-lettered",
    )  # fmt: skip
    hooks_dead_letter_max_len: int = _setting(
        "TRACKER_HOOKS_DEAD_LETTER_MAX_LEN", 100_000, _int(1, 10**9), "entries kept per hook dead-letter stream"
    )
    hooks_reload_s: float = _setting(
        "TRACKER_HOOKS_RELOAD_S", 5.0, _float(0.05, 3600), "how often the worker re-reads hook definitions"
    )
    hooks_claim_idle_ms: int = _setting(
        "TRACKER_HOOKS_CLAIM_IDLE_MS", 60_000, _int(1, 10**9), "pending this long, an entry of another worker is taken"
    )
    hooks_heartbeat_ttl_s: int = _setting(
        "TRACKER_HOOKS_HEARTBEAT_TTL_S", 30, _int(2, 86400), "TTL of the hooks worker heartbeat key"
    )
    hooks_replay_max_events: int = _setting(
        "TRACKER_HOOKS_REPLAY_MAX_EVENTS", 1_000_000, _int(1, 10**9), "events one replay job may queue"
    )
    hooks_test_timeout_s: float = _setting(
        "TRACKER_HOOKS_TEST_TIMEOUT_S", 20.0, _float(0.1, 600), "how long the API waits for a test delivery's answer"
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build from the environment; `overrides` (already typed) win, as CLI flags do."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[str] = []
        for f in dataclasses.fields(cls):
            if f.name in overrides:
                continue
            env = f.metadata["env"]
            raw = environ.get(env)
            if raw is None:
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                problems.append(f"{env}={_shown(env, raw)}: {exc}")
        values.update(overrides)
        if problems:
            raise SettingsError("bad settings: " + "; ".join(problems))
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if self.signing_keys and self.signing_key_id != -1 and self.signing_key_id not in self.signing_keys:
            raise SettingsError(
                f"TRACKER_SIGNING_KEY_ID={self.signing_key_id}: no such key in TRACKER_SIGNING_KEYS "
                f"(have {sorted(self.signing_keys)})"
            )
        if self.site_link_param and not re.fullmatch(r"[A-Za-z0-9_]{1,32}", self.site_link_param):
            raise SettingsError("TRACKER_SITE_LINK_PARAM: expected letters, digits and underscores")
        if not self.stream_prefix or any(c in self.stream_prefix for c in "{} \r\n"):
            raise SettingsError("TRACKER_STREAM_PREFIX: expected a non-empty name without braces or spaces")

    def require(self, *names: str) -> None:
        """Fail with the variable's name when a setting this command needs is empty."""
        by_name = {f.name: f for f in dataclasses.fields(self)}
        for name in names:
            if not getattr(self, name):
                raise SettingsError(f"{by_name[name].metadata['env']} is not set")

    @property
    def active_key_id(self) -> int:
        self.require("signing_keys")
        return next(iter(self.signing_keys)) if self.signing_key_id == -1 else self.signing_key_id

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        # Secrets never reach logs: keys show by id only, URLs without passwords.
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "signing_keys":
                value = f"<{len(value)} keys: {sorted(value)}>"
            elif f.name.endswith("_url"):
                value = redact_url(value)
            elif is_secret(f.name) and isinstance(value, str | bytes) and value:
                value = "<hidden>"
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


_SECRET_WORDS = ("key", "secret", "auth", "password", "token", "credential")


def is_secret(name: str) -> bool:
    """Settings whose values must never reach a log line or an error message."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _shown(env: str, raw: str) -> str:
    if is_secret(env):
        return "<hidden>"
    return repr(redact_url(raw) if env.endswith("_URL") else raw)


def settings_help() -> str:
    """One line per variable, for `--help` epilogs."""
    lines = []
    for f in dataclasses.fields(Settings):
        default = f.default
        if f.name == "signing_keys":
            default = "none: required by the edge and token commands"
        lines.append(f"  {f.metadata['env']:<34} {f.metadata['doc']} [default: {default}]")
    return "\n".join(lines)

"""The edge's settings: event buffer and spool, caches, the tracking routes' limits, the API."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tracker.config._fields import SettingsError, SettingsPart, boolean, choice, float_range, int_range, setting


def _optional_http_url(raw: str) -> str:
    if not raw:
        return ""
    from tracker.contract.urls import check_redirect_url

    check_redirect_url(raw)
    return raw


def _ops_token(raw: str) -> str:
    # Sent in a header: printable ASCII without spaces, and long enough not to be guessed.
    if raw and (len(raw) < 16 or not raw.isascii() or not raw.isprintable() or " " in raw):
        raise ValueError("expected at least 16 printable ASCII characters without spaces (or empty: open)")
    return raw


@dataclass(frozen=True, slots=True, repr=False)
class EdgeSettings(SettingsPart):
    """What only the edge reads (`TRACKER_*`), including the API it serves."""

    stream_max_len: int = setting(
        "TRACKER_STREAM_MAX_LEN",
        100_000,
        int_range(1, 10**10),
        "stream entries (event batches) per shard above which the edge spools instead of adding to Redis",
    )
    redis_memory_ratio: float = setting(
        "TRACKER_REDIS_MEMORY_RATIO",
        0.9,
        float_range(0.05, 1.0),
        "share of Redis' maxmemory from which the edge spools instead of adding to Redis (unused when maxmemory is 0)",
    )
    batch_max_events: int = setting("TRACKER_BATCH_MAX_EVENTS", 512, int_range(1, 100_000), "XADD batch size")
    batch_max_bytes: int = setting("TRACKER_BATCH_MAX_BYTES", 262_144, int_range(1024, 64 * 2**20), "XADD batch bytes")
    batch_max_age_ms: float = setting(
        "TRACKER_BATCH_MAX_AGE_MS", 5.0, float_range(0.1, 10_000), "longest an event waits in the edge buffer"
    )
    spool_dir: Path = setting("TRACKER_SPOOL_DIR", Path("var/spool"), Path, "edge spool folder")
    spool_max_bytes: int = setting(
        "TRACKER_SPOOL_MAX_BYTES", 1 << 30, int_range(4096, 1 << 44), "spool size bound per edge worker"
    )
    spool_fsync: str = setting(
        "TRACKER_SPOOL_FSYNC",
        "interval",
        choice("always", "interval", "never"),
        "always: fsync each batch; interval: once a second; never: leave it to the OS",
    )
    redis_retry_s: float = setting(
        "TRACKER_REDIS_RETRY_S", 1.0, float_range(0.01, 600), "pause between Redis probes while spooling"
    )
    link_cache_size: int = setting(
        "TRACKER_LINK_CACHE_SIZE", 4096, int_range(1, 10**7), "link-table versions kept in each edge process"
    )
    link_cache_redis_ttl_s: int = setting(
        "TRACKER_LINK_CACHE_REDIS_TTL_S", 7 * 86400, int_range(1, 10**8), "TTL of link-table copies in Redis"
    )
    link_cache_negative_ttl_s: float = setting(
        "TRACKER_LINK_CACHE_NEGATIVE_TTL_S",
        30.0,
        float_range(0, 86400),
        "how long an edge remembers that a message or version does not exist",
    )
    fallback_url: str = setting(
        "TRACKER_FALLBACK_URL", "", _optional_http_url, "where bad click links go (empty: a 404 page)"
    )
    max_path_len: int = setting(
        "TRACKER_MAX_PATH_LEN", 512, int_range(64, 8192), "longer request paths get 414 without work"
    )
    trust_forwarded_for: bool = setting(
        "TRACKER_TRUST_FORWARDED_FOR", False, boolean, "take the client IP from X-Forwarded-For"
    )
    pg_pool_size: int = setting("TRACKER_PG_POOL_SIZE", 4, int_range(1, 1000), "Postgres pool size per process")
    site_keys: str = setting(
        "TRACKER_SITE_KEYS", "", str, "comma-separated site keys the website pixel accepts (empty: pixel off)"
    )
    site_link_param: str = setting(
        "TRACKER_SITE_LINK_PARAM",
        "",
        str,
        "query parameter a click adds to the landing URL with a signed ref for the website pixel (empty: off)",
    )
    site_max_bytes: int = setting(
        "TRACKER_SITE_MAX_BYTES", 4096, int_range(256, 65_536), "largest website pixel event (413 above)"
    )
    short_link_cache_size: int = setting(
        "TRACKER_SHORT_LINK_CACHE_SIZE", 100_000, int_range(1, 10**8), "SMS short codes kept in each edge process"
    )
    read_min_s: float = setting(
        "TRACKER_READ_MIN_S", 10.0, float_range(0, 3600), "dwell at /r/ from which an open counts as `read`"
    )
    read_max_s: float = setting(
        "TRACKER_READ_MAX_S", 120.0, float_range(1, 3600), "longest a /r/ read beacon is held open"
    )
    read_tick_s: float = setting(
        "TRACKER_READ_TICK_S", 2.0, float_range(0.05, 60), "a held read beacon sends one byte this often"
    )
    confirm_url: str = setting(
        "TRACKER_CONFIRM_URL", "", _optional_http_url, "thank-you page after a double opt-in (empty: built-in)"
    )
    form_max_bytes: int = setting(
        "TRACKER_FORM_MAX_BYTES", 65_536, int_range(1024, 16 * 2**20), "largest unsubscribe/confirm POST body"
    )
    push_cors_origin: str = setting(
        "TRACKER_PUSH_CORS_ORIGIN", "*", str, "Access-Control-Allow-Origin of the /p/ push callbacks"
    )
    api_max_body_bytes: int = setting(
        "TRACKER_API_MAX_BODY_BYTES",
        4 * 2**20,
        int_range(1024, 2**30),
        "largest JSON request body of the API (413 above)",
    )
    api_import_max_bytes: int = setting(
        "TRACKER_API_IMPORT_MAX_BYTES", 2**30, int_range(1024, 2**40), "largest profile import body (413 above)"
    )
    api_import_chunk_rows: int = setting(
        "TRACKER_API_IMPORT_CHUNK_ROWS", 500, int_range(1, 100_000), "import rows applied per transaction"
    )
    api_render_max_recipients: int = setting(
        "TRACKER_API_RENDER_MAX_RECIPIENTS", 1000, int_range(1, 1_000_000), "profiles per render request, at most"
    )
    api_short_link_ttl_s: int = setting(
        "TRACKER_API_SHORT_LINK_TTL_S", 30 * 86400, int_range(1, 10**8), "TTL of SMS short codes cached in Redis"
    )
    # -- public edge inputs: floods of unknown short codes, link ages --
    short_link_negative_ttl_s: int = setting(
        "TRACKER_SHORT_LINK_NEGATIVE_TTL_S",
        60,
        int_range(0, 86400),
        "how long an unknown SMS short code is remembered as unknown, in each process and in Redis (0: not at all)",
    )
    short_link_max_inflight: int = setting(
        "TRACKER_SHORT_LINK_MAX_INFLIGHT",
        32,
        int_range(1, 10_000),
        "SMS short-code lookups (Redis, Postgres) one edge process runs at once; above it /s/ answers 503 at once",
    )
    events_redis_connections: int = setting(
        "TRACKER_EVENTS_REDIS_CONNECTIONS",
        16,
        int_range(1, 1000),
        "Redis connections kept for event writes alone, apart from the lookups' pool",
    )
    confirm_max_age_days: int = setting(
        "TRACKER_CONFIRM_MAX_AGE_DAYS", 0, int_range(0, 36_500), "days a double opt-in link works (0: no limit)"
    )
    unsubscribe_max_age_days: int = setting(
        "TRACKER_UNSUBSCRIBE_MAX_AGE_DAYS", 0, int_range(0, 36_500), "days an unsubscribe link works (0: no limit)"
    )

    # -- the operator's endpoints (edge/ops_auth.py); /health and /ready stay open for load balancers --
    ops_token: str = setting(
        "TRACKER_OPS_TOKEN",
        "",
        _ops_token,
        "bearer token that /metrics and /health/deps require (empty: open to anyone; set it in production)",
    )

    # -- analytics (message reports, click maps, cohorts; not the provider reports of TRACKER_REPORT_*) --
    analytics_max_range_days: int = setting(
        "TRACKER_ANALYTICS_MAX_RANGE_DAYS",
        400,
        int_range(1, 36_500),
        "longest date range one analytics report or filter may span (422 above)",
    )
    analytics_snapshot_max_age_s: float = setting(
        "TRACKER_ANALYTICS_SNAPSHOT_MAX_AGE_S",
        60.0,
        float_range(0, 86400),
        "a list report's snapshot older than this is served and refreshed in the background",
    )
    analytics_snapshot_sync_after_s: float = setting(
        "TRACKER_ANALYTICS_SNAPSHOT_SYNC_AFTER_S",
        300.0,
        float_range(0, 7 * 86400),
        "a list report's snapshot older than this (or none) is computed before answering: the staleness bound",
    )
    analytics_link_ttl_s: int = setting(
        "TRACKER_ANALYTICS_LINK_TTL_S",
        3600,
        int_range(60, 30 * 86400),
        "lifetime of a signed report-page URL (POST /api/v1/report-links, tracker report-url)",
    )

    def check(self) -> None:
        if self.site_link_param and not re.fullmatch(r"[A-Za-z0-9_]{1,32}", self.site_link_param):
            raise SettingsError("TRACKER_SITE_LINK_PARAM: expected letters, digits and underscores")

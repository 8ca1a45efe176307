"""The flusher's settings: batches, claiming, retries, partitions, profile effects, the committed feed."""

from __future__ import annotations

from dataclasses import dataclass

from tracker.config._fields import SettingsPart, boolean, float_range, int_range, setting


@dataclass(frozen=True, slots=True, repr=False)
class FlusherSettings(SettingsPart):
    """What only the flusher reads (`FLUSHER_*`, and the committed feed's `TRACKER_HOOKS_*` two)."""

    consumer: str = setting("FLUSHER_CONSUMER", "", str, "consumer name in the stream group (empty: hostname-pid)")
    batch_max_events: int = setting(
        "FLUSHER_BATCH_MAX_EVENTS", 10_000, int_range(1, 1_000_000), "events per Postgres transaction, at most"
    )
    batch_max_bytes: int = setting(
        "FLUSHER_BATCH_MAX_BYTES", 8 * 2**20, int_range(1024, 2**30), "encoded bytes per batch, at most"
    )
    batch_max_age_ms: float = setting(
        "FLUSHER_BATCH_MAX_AGE_MS", 200.0, float_range(1, 60_000), "longest the first event of a batch waits"
    )
    claim_idle_ms: int = setting(
        "FLUSHER_CLAIM_IDLE_MS",
        60_000,
        int_range(1, 10**9),
        "pending this long, an entry of another consumer is taken over",
    )
    claim_interval_s: float = setting(
        "FLUSHER_CLAIM_INTERVAL_S", 15.0, float_range(0.05, 86400), "how often to look for entries to take over"
    )
    heartbeat_ttl_s: int = setting(
        "FLUSHER_HEARTBEAT_TTL_S", 30, int_range(2, 86400), "TTL of the heartbeat key (refreshed every third of it)"
    )
    retry_min_s: float = setting(
        "FLUSHER_RETRY_MIN_S", 0.2, float_range(0.001, 600), "first pause after a Redis or Postgres failure"
    )
    retry_max_s: float = setting(
        "FLUSHER_RETRY_MAX_S", 10.0, float_range(0.001, 3600), "longest pause between retries (doubling up to it)"
    )
    shutdown_grace_s: float = setting(
        "FLUSHER_SHUTDOWN_GRACE_S", 5.0, float_range(0, 600), "on SIGTERM, how long to keep retrying the batch in hand"
    )
    partitions_ahead_days: int = setting(
        "FLUSHER_PARTITIONS_AHEAD_DAYS", 7, int_range(1, 366), "daily events partitions created ahead of today"
    )
    retention_days: int = setting(
        "FLUSHER_RETENTION_DAYS", 400, int_range(0, 100_000), "events partitions older than this are dropped (0: never)"
    )
    maintenance_interval_s: float = setting(
        "FLUSHER_MAINTENANCE_INTERVAL_S", 3600.0, float_range(1, 86400 * 7), "how often partitions are created/dropped"
    )
    soft_bounce_limit: int = setting(
        "FLUSHER_SOFT_BOUNCE_LIMIT", 3, int_range(1, 1000), "soft bounces within the window that make a hard bounce"
    )
    soft_bounce_window_s: int = setting(
        "FLUSHER_SOFT_BOUNCE_WINDOW_S", 7 * 86400, int_range(1, 10**8), "window of FLUSHER_SOFT_BOUNCE_LIMIT, seconds"
    )
    dead_letter_max_len: int = setting(
        "FLUSHER_DEAD_LETTER_MAX_LEN", 100_000, int_range(1, 10**9), "dead-letter stream length bound (approximate)"
    )
    synchronous_commit: bool = setting(
        "FLUSHER_SYNCHRONOUS_COMMIT",
        True,
        boolean,
        "false trades durability for speed: a Postgres crash may lose acknowledged events",
    )
    pg_connections: int = setting(
        "FLUSHER_PG_CONNECTIONS", 2, int_range(1, 64), "batches written to Postgres at once, one connection each"
    )
    migrate: bool = setting(
        "FLUSHER_MIGRATE", True, boolean, "apply schema migrations at start (safe with several flushers)"
    )
    committed_check_interval_s: float = setting(
        "TRACKER_HOOKS_CHECK_INTERVAL_S", 1.0, float_range(0, 3600),
        "how long the flusher trusts its answer to 'does any hook exist' (a new hook waits up to this long)",
    )  # fmt: skip
    committed_entry_max_events: int = setting(
        "TRACKER_HOOKS_ENTRY_MAX_EVENTS", 1000, int_range(1, 100_000), "events per committed-stream entry, at most"
    )
    # -- the human-or-machine verdict (tracker.domain.verdicts); `tracker reclassify` reads them too
    settle_s: float = setting(
        "FLUSHER_SETTLE_S", 30.0, float_range(0, 86400),
        "a click's profile effects and action-hook delivery wait this long: a burst or honeypot may still "
        "show it was a machine's",
    )  # fmt: skip
    effects_for_unknown: bool = setting(
        "FLUSHER_EFFECTS_FOR_UNKNOWN", True, boolean,
        "apply the link attributes of clicks judged `unknown` (no signal either way); false: only `human` ones",
    )  # fmt: skip
    too_fast_s: float = setting(
        "TRACKER_VERDICT_TOO_FAST_S", 20.0, float_range(0, 86400),
        "an open or click this soon after the message's render, send or delivery is a machine's",
    )  # fmt: skip
    burst_window_s: float = setting(
        "TRACKER_VERDICT_BURST_WINDOW_S", 10.0, float_range(0, 3600),
        "window in which TRACKER_VERDICT_BURST_LINKS distinct links from one IP prefix make a burst",
    )  # fmt: skip
    burst_links: int = setting(
        "TRACKER_VERDICT_BURST_LINKS", 3, int_range(2, 1000), "distinct links of one message that make a burst"
    )
    honeypot_window_s: float = setting(
        "TRACKER_VERDICT_HONEYPOT_WINDOW_S", 60.0, float_range(0, 86400),
        "clicks from the IP prefix that fetched a message's honeypot link, this close in time, are a machine's",
    )  # fmt: skip
    machine_networks_file: str = setting(
        "TRACKER_MACHINE_NETWORKS_FILE", "", str,
        "CIDR list of machine networks, read again when it changes (empty: the shipped list)",
    )  # fmt: skip

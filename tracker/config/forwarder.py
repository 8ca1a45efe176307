"""The forwarder's settings: how action hooks are read, retried, paused and dead-lettered.

Each hook's own destination and secrets live in Postgres, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracker.config._fields import SettingsPart, float_range, int_range, setting


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
        "TRACKER_HOOKS_TEST_TIMEOUT_S",
        20.0,
        float_range(0.1, 600),
        "how long the API waits for a test delivery's answer",
    )

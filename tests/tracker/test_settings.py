"""Settings: typed from the environment, failing with the variable's name, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracker.config import Settings, SettingsError, is_secret

BASE = {"TRACKER_SIGNING_KEYS": "1:first-secret-0123456789,2:second-secret-0123456789"}


def test_defaults_and_parsing() -> None:
    settings = Settings.from_env({**BASE, "TRACKER_STREAM_SHARDS": "8", "TRACKER_TRUST_FORWARDED_FOR": "yes"})
    assert settings.stream_shards == 8
    assert settings.edge.trust_forwarded_for is True
    assert settings.signing_keys == {1: b"first-secret-0123456789", 2: b"second-secret-0123456789"}
    assert settings.active_key_id == 1
    assert Settings.from_env({**BASE, "TRACKER_SIGNING_KEY_ID": "2"}).active_key_id == 2


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRACKER_STREAM_SHARDS": "zero"}, "TRACKER_STREAM_SHARDS='zero'"),
        ({"TRACKER_STREAM_SHARDS": "0"}, "from 1 to 1024"),
        ({"TRACKER_SPOOL_FSYNC": "sometimes"}, "expected one of always, interval, never"),
        ({"REDIS_URL": "http://localhost"}, "REDIS_URL"),
        ({"TRACKER_SIGNING_KEYS": "1:short"}, "shorter than 16"),
        ({"TRACKER_SIGNING_KEYS": "one:long-enough-secret-here"}, "KEY_ID:SECRET"),
        ({"TRACKER_SIGNING_KEY_ID": "7"}, "TRACKER_SIGNING_KEY_ID=7: no such key"),
        ({"TRACKER_FALLBACK_URL": "javascript:alert(1)"}, "TRACKER_FALLBACK_URL"),
        ({"TRACKER_STREAM_PREFIX": "a{b}"}, "TRACKER_STREAM_PREFIX"),
        ({"TRACKER_TRUST_FORWARDED_FOR": "maybe"}, "expected true or false"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**BASE, **env})
    assert message in str(caught.value)


def test_missing_values_are_named_when_required() -> None:
    settings = Settings.from_env({})
    with pytest.raises(SettingsError, match="REDIS_URL is not set"):
        settings.require("redis_url")
    with pytest.raises(SettingsError, match="TRACKER_SIGNING_KEYS is not set"):
        settings.require("signing_keys")


def test_secrets_never_appear_in_repr_or_errors() -> None:
    env = {**BASE, "DATABASE_URL": "postgresql://app:hunter2-password@db/prod"}
    shown = repr(Settings.from_env(env))
    assert "first-secret" not in shown and "hunter2" not in shown
    assert "app:***@db" in shown
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"TRACKER_SIGNING_KEYS": "1:short-secret"})
    assert "short-secret" not in str(caught.value)


def test_every_secret_looking_setting_is_hidden_from_repr() -> None:
    settings = Settings.from_env(BASE)
    changes: dict[str, dict[str, str]] = {}
    for part, f in Settings.described():
        if part and is_secret(f.name) and f.type in ("str", str):
            changes.setdefault(part, {})[f.name] = "s3cret-value-" + f.name
    shown = repr(settings.replace(**changes))
    assert len(changes["reports"]) >= 6  # every provider's credentials are among them
    for part in changes.values():
        for value in part.values():
            assert value not in shown


def test_each_program_has_its_own_part_and_a_change_to_one_leaves_the_rest() -> None:
    settings = Settings.from_env({**BASE, "FLUSHER_BATCH_MAX_EVENTS": "77", "TRACKER_HOOKS_RETRY_MAX_S": "9"})
    assert (settings.flusher.batch_max_events, settings.forwarder.retry_max_s) == (77, 9.0)
    assert settings.edge.batch_max_events == 512  # the edge's own XADD batch, a different setting
    changed = settings.replace(stream_shards=2, flusher={"consumer": "f1"})
    assert (changed.stream_shards, changed.flusher.consumer, changed.flusher.batch_max_events) == (2, "f1", 77)
    assert changed.edge == settings.edge and settings.flusher.consumer == ""


def test_provider_report_settings_still_read_their_first_names() -> None:
    old = Settings.from_env({"TRACKER_HOOK_MAX_BODY_BYTES": "2048", "TRACKER_HOOK_TWILIO_AUTH_TOKEN": "tw"})
    assert (old.reports.max_body_bytes, old.reports.twilio_auth_token) == (2048, "tw")
    both = Settings.from_env({"TRACKER_HOOK_MAX_BODY_BYTES": "2048", "TRACKER_REPORT_MAX_BODY_BYTES": "4096"})
    assert both.reports.max_body_bytes == 4096  # the new name wins
    with pytest.raises(SettingsError, match="TRACKER_HOOK_MAX_SKEW_S='soon'"):
        Settings.from_env({"TRACKER_HOOK_MAX_SKEW_S": "soon"})


def test_the_readme_settings_table_is_the_one_the_code_makes() -> None:
    from tracker.config.__main__ import main

    assert main(["--check", str(Path(__file__).resolve().parents[2] / "README.md")]) == 0


def test_settings_are_frozen() -> None:
    settings = Settings.from_env(BASE)
    with pytest.raises(AttributeError):
        settings.stream_shards = 2  # type: ignore[misc]

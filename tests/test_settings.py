"""Settings: typed from the environment, failing with the variable's name, secrets never shown."""

from __future__ import annotations

import dataclasses

import pytest

from tracker.settings import Settings, SettingsError, is_secret

BASE = {"TRACKER_SIGNING_KEYS": "1:first-secret-0123456789,2:second-secret-0123456789"}


def test_defaults_and_parsing() -> None:
    settings = Settings.from_env({**BASE, "TRACKER_STREAM_SHARDS": "8", "TRACKER_TRUST_FORWARDED_FOR": "yes"})
    assert settings.stream_shards == 8
    assert settings.trust_forwarded_for is True
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
    secrets_set = {
        f.name: "s3cret-value-" + f.name
        for f in dataclasses.fields(Settings)
        if is_secret(f.name) and f.type in ("str", str)
    }
    shown = repr(settings.replace(**secrets_set))
    assert secrets_set  # the webhook and API secrets are among them
    for value in secrets_set.values():
        assert value not in shown


def test_settings_are_frozen() -> None:
    settings = Settings.from_env(BASE)
    with pytest.raises(AttributeError):
        settings.stream_shards = 2  # type: ignore[misc]

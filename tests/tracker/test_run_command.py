"""The README's main job: `tracker run` starts edge + flusher, and the demo message's events reach Postgres."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def test_tracker_run_demo_end_to_end(settings, free_port, tmp_path) -> None:
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "DATABASE_URL": settings.database_url,
        "TRACKER_STREAM_PREFIX": settings.stream_prefix,
    }
    env.pop("TRACKER_SIGNING_KEYS", None)
    result = subprocess.run(
        [sys.executable, "-m", "tracker.ops.cli", "run", "--exit-after-demo", "--port", str(free_port),
         "--data-dir", str(tmp_path / "var")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert f"open pixel: http://127.0.0.1:{free_port}/o/" in out
    assert "GET open pixel -> 200 image/gif" in out
    assert "GET click      -> 302 Location: https://example.com/welcome?utm_source=demo" in out
    assert "demo events stored in Postgres: clicked, opened" in out
    assert '"clicked_link": true' in out  # the link's update-clicked_link attribute, applied by the flusher
    # A generated signing key is kept private in the data folder.
    assert (tmp_path / "var" / "signing-keys").stat().st_mode & 0o777 == 0o600
    assert "stack file: " in out
    assert not (tmp_path / "var" / "stack.env").exists()  # removed when it stopped
    # Each program starts with one short line; Granian's lifecycle and the edge's whole settings are DEBUG.
    logs = result.stderr.splitlines()
    for program in ("edge", "flusher", "forwarder"):
        [start] = [line for line in logs if f": {program} 0" in line or f": {program} unknown" in line]
        assert len(start) < 250 and f"{settings.stream_shards} shards" in start
    assert f"on http://127.0.0.1:{free_port} (1 worker)" in result.stderr
    assert "edge worker ready" not in result.stderr and "Settings(" not in result.stderr
    assert "granian" not in result.stderr.lower() and "granian" not in out.lower()


@pytest.mark.slow  # starts an embedded Postgres
def test_tracker_run_with_embedded_servers_says_nothing_about_xdg_runtime_dir(free_port, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TRACKER_", "REDIS_URL", "DATABASE_URL", "XDG_"))}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "tracker.ops.cli", "run", "--exit-after-demo", "--port", str(free_port),
         "--data-dir", str(tmp_path / "var")],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "embedded Postgres: " in result.stdout
    assert "demo events stored in Postgres: clicked, opened" in result.stdout
    assert "XDG_RUNTIME_DIR" not in result.stderr and "Warning" not in result.stderr, result.stderr


def test_tracker_without_a_command_shows_help_and_exits_2() -> None:
    result = subprocess.run([sys.executable, "-m", "tracker.ops.cli"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "run" in result.stdout and "migrate" in result.stdout


def test_edge_refuses_to_start_without_settings_and_names_them() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "REDIS_URL", "DATABASE_URL"))}
    result = subprocess.run([sys.executable, "-m", "edge.serve"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "REDIS_URL is not set" in result.stderr

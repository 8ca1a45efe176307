"""`tracker run` leaves the address of what it started in var/stack.env, and every other `tracker` command
finds the stack there: without exports, with the environment winning, and never from a stale file."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rigs.processes import read_until
from tracker.ops.stack_file import write_stack

TRACKER = [sys.executable, "-m", "tracker.ops.cli"]


def bare_env(**variables: str) -> dict[str, str]:
    """The environment of a shell that was told nothing about the stack (nor to leave output unbuffered)."""
    told = ("TRACKER_", "FLUSHER_", "REDIS_URL", "DATABASE_URL", "PYTHONUNBUFFERED")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(told)}, **variables}


def tracker(cwd: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRACKER, *args], cwd=cwd, env=bare_env(**variables), capture_output=True, text=True,
                          timeout=60)  # fmt: skip


@pytest.fixture
def running_stack(settings, free_port, tmp_path) -> Iterator[subprocess.Popen[str]]:
    """`tracker run` in tmp_path (data folder ./var) on the test servers, up and past its demo."""
    env = bare_env(REDIS_URL=settings.redis_url, DATABASE_URL=settings.database_url,
                   TRACKER_STREAM_PREFIX=settings.stream_prefix)  # fmt: skip
    with open(tmp_path / "run.log", "w") as log:
        run = subprocess.Popen([*TRACKER, "run", "--port", str(free_port)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=log, text=True)  # fmt: skip
    try:
        # Printed line by line into a pipe, as into `tee` or a journal: no PYTHONUNBUFFERED needed.
        assert read_until(run, "running; Ctrl-C", timeout=90), (tmp_path / "run.log").read_text()[-3000:]
        assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        yield run
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGTERM)
            run.wait(60)


def test_commands_find_the_stack_tracker_run_started_and_the_environment_wins(running_stack, settings, free_port,
                                                                             tmp_path) -> None:  # fmt: skip
    stack_file = tmp_path / "var" / "stack.env"
    assert stack_file.stat().st_mode & 0o777 == 0o600
    signing_key = (tmp_path / "var" / "signing-keys").read_text().strip()
    assert signing_key not in stack_file.read_text()  # it names the key file, the key stays in it

    stats = tracker(tmp_path, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert "using REDIS_URL, DATABASE_URL" in stats.stderr and "var/stack.env" in stats.stderr
    assert f"{settings.stream_prefix}:events:" in json.dumps(json.loads(stats.stdout))

    key = tracker(tmp_path, "create-api-key", "--name", "from the stack file")
    assert key.returncode == 0, key.stderr
    assert key.stdout.startswith("trk_")

    env = tracker(tmp_path, "env")
    assert env.returncode == 0, env.stderr
    exports = dict(shlex.split(line)[1].split("=", 1) for line in env.stdout.splitlines() if line.startswith("export"))
    assert exports["REDIS_URL"] == settings.redis_url
    assert exports["DATABASE_URL"] == settings.database_url
    assert exports["TRACKER_STREAM_PREFIX"] == settings.stream_prefix
    assert exports["TRACKER_PUBLIC_URL"] == f"http://127.0.0.1:{free_port}"
    assert exports["TRACKER_SIGNING_KEYS"] == signing_key
    # The lines are shell: evaluated elsewhere, they point that shell at this stack.
    shell = subprocess.run(["sh", "-c", f'eval "$({shlex.join(TRACKER)} env --data-dir {tmp_path / "var"})" && '
                            'printf "%s\\n%s" "$DATABASE_URL" "$TRACKER_SIGNING_KEYS"'], cwd="/",
                           env=bare_env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert shell.stdout == f"{settings.database_url}\n{signing_key}", shell.stderr

    # The environment wins over the stack file, name by name.
    stats = tracker(tmp_path, "stats", REDIS_URL="redis://127.0.0.1:1/0")  # nothing listens there
    assert stats.returncode == 1
    assert "127.0.0.1:1" in stats.stdout + stats.stderr
    assert "REDIS_URL" not in stats.stderr.partition("using ")[2].partition(" from ")[0]


def test_tracker_run_removes_its_stack_file_when_it_stops(running_stack, tmp_path) -> None:
    running_stack.send_signal(signal.SIGTERM)
    assert running_stack.wait(60) == 0
    assert not (tmp_path / "var" / "stack.env").exists()
    stats = tracker(tmp_path, "stats")
    assert stats.returncode == 2
    assert "REDIS_URL is not set (and there is no var/stack.env" in stats.stderr
    assert "tracker env --data-dir" in stats.stderr and "TRACKER_DATA_DIR" in stats.stderr


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_stack_file_whose_tracker_run_is_gone_is_ignored_and_said_to_be(settings, tmp_path) -> None:
    pid = dead_pid()
    write_stack(tmp_path / "var", {"REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url}, {}, pid)
    stats = tracker(tmp_path, "stats")
    assert stats.returncode == 2
    assert f"ignoring var/stack.env: its `tracker run` (pid {pid}) is gone" in stats.stderr
    assert "REDIS_URL is not set" in stats.stderr
    env = tracker(tmp_path, "env")
    assert env.returncode == 1 and env.stdout == ""
    assert "is stale" in env.stderr


def test_a_stack_file_whose_redis_does_not_answer_is_ignored_and_said_to_be(tmp_path) -> None:
    socket = tmp_path / "var" / "redis" / "redis.sock"  # an embedded Redis that is gone
    write_stack(tmp_path / "var", {"REDIS_URL": f"unix://{socket}"}, {}, os.getpid())  # a live process
    stats = tracker(tmp_path, "stats")
    assert stats.returncode == 2
    assert f"ignoring var/stack.env: its Redis ({socket}) does not answer" in stats.stderr


def test_every_command_finds_a_stack_in_another_data_folder(settings, tmp_path) -> None:
    """`tracker run --data-dir /srv/var`: commands run elsewhere find it by --data-dir or TRACKER_DATA_DIR."""
    data_dir, elsewhere = tmp_path / "srv" / "var", tmp_path / "repo"
    elsewhere.mkdir()
    write_stack(data_dir, {"REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url,
                           "TRACKER_STREAM_PREFIX": settings.stream_prefix}, {}, os.getpid())  # fmt: skip
    for how in (["--data-dir", str(data_dir)], []):
        stats = tracker(elsewhere, "stats", "--json", *how, **({} if how else {"TRACKER_DATA_DIR": str(data_dir)}))
        assert stats.returncode == 0, stats.stderr
        assert f"from {data_dir}/stack.env" in stats.stderr
        assert f"{settings.stream_prefix}:events:" in stats.stdout
    doctor = tracker(elsewhere, "doctor", "--json", "--data-dir", str(data_dir))
    assert f"from {data_dir}/stack.env" in doctor.stderr
    env = tracker(elsewhere, "env", TRACKER_DATA_DIR=str(data_dir))
    assert env.returncode == 0 and f"export REDIS_URL={settings.redis_url}" in env.stdout, env.stderr
    lost = tracker(elsewhere, "stats")
    assert lost.returncode == 2
    assert "tracker env --data-dir DIR" in lost.stderr and "--data-dir" in lost.stderr


def test_tracker_help_is_short_and_points_to_the_settings_list(tmp_path) -> None:
    helped = tracker(tmp_path, "--help")
    assert helped.returncode == 0
    assert len(helped.stdout.splitlines()) < 60, helped.stdout
    assert "tracker settings" in helped.stdout and "REDIS_URL" in helped.stdout
    listed = tracker(tmp_path, "settings")
    assert listed.returncode == 0 and "FLUSHER_SETTLE_S" in listed.stdout and "TRACKER_PUBLIC_URL" in listed.stdout
    flusher_only = tracker(tmp_path, "settings", "flusher")
    assert "FLUSHER_SETTLE_S" in flusher_only.stdout and "TRACKER_PUBLIC_URL" not in flusher_only.stdout

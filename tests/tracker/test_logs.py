"""Logs: one short start line per program without secrets, JSON lines on demand, repeats held back,
and routine library lines (Granian's, httpx's per delivery) at DEBUG."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

from tests.rigs.api_helpers import running_api
from tests.rigs.flusher_helpers import flusher_env
from tests.rigs.hook_helpers import LOOPBACK_ALLOWED, SECRET, SECRET_KEYS, hook_settings, http_receiver, no_hooks_left  # noqa: F401
from tracker.streams.logs import RepeatLimit, version

REDIS_SECRET = "r3dis-pass-word-0001"
PG_SECRET = "pg-pass-word-0002"


def with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = f"{parts.hostname}:{parts.port}" if parts.hostname else ""  # an embedded server's socket: no host
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def run_flusher(settings, **variables: str) -> subprocess.CompletedProcess[str]:
    # The default Redis user has no password, so any password is accepted with its name; trust auth in
    # Postgres the same: the programs run for real with credentials in both URLs.
    env = flusher_env(
        settings.replace(redis_url=with_password(settings.redis_url, "default", REDIS_SECRET),
                         database_url=with_password(settings.database_url, "postgres", PG_SECRET)),
        **variables,
    )  # fmt: skip
    return subprocess.run([sys.executable, "-m", "flusher.cli", "--burst"], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_a_program_starts_with_one_short_line_of_hosts_and_shards_and_no_secrets(settings) -> None:
    result = run_flusher(settings)
    assert result.returncode == 0, result.stderr[-2000:]
    first = result.stderr.splitlines()[0]
    assert " INFO flusher: flusher " + version() + " as " in first
    redis, pg = urlsplit(settings.redis_url), urlsplit(settings.database_url)
    if redis.hostname:  # else a socket, named by its path
        assert f"Redis {redis.hostname}:{redis.port}{redis.path}" in first
    else:
        assert f"Redis {redis.path}" in first
    if pg.hostname:
        assert f"Postgres {pg.hostname}:{pg.port}{pg.path}" in first
    else:
        assert f"Postgres {pg.query.split('host=')[1].split('&')[0]}{pg.path}" in first
    assert f"{settings.stream_shards} shards" in first
    assert len(first) < 250
    assert REDIS_SECRET not in result.stderr + result.stdout
    assert PG_SECRET not in result.stderr + result.stdout


def test_json_format_writes_one_object_per_line(settings) -> None:
    result = run_flusher(settings, TRACKER_LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines, "no log lines"
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line)
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "flusher"
    assert lines[0]["message"].startswith(f"flusher {version()} as ")
    assert REDIS_SECRET not in result.stderr and PG_SECRET not in result.stderr


def test_json_lines_carry_the_exception_text() -> None:
    script = (
        "import logging\n"
        "from tracker.config import Settings\n"
        "from tracker.streams.logs import setup_logging\n"
        "setup_logging(Settings.from_env({'TRACKER_LOG_FORMAT': 'json'}))\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    logging.getLogger('probe').exception('it broke')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    [line] = result.stderr.splitlines()
    doc = json.loads(line)
    assert doc["level"] == "ERROR" and doc["logger"] == "probe" and doc["message"] == "it broke"
    assert "ZeroDivisionError" in doc["exception"] and "Traceback" in doc["exception"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limited_logger(clock: Clock) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RepeatLimit(every_s=30, clock=clock))
    logger = logging.Logger("limited")  # not registered: nothing else sees it
    logger.addHandler(handler)
    return logger, out


def test_a_repeated_error_is_written_once_per_interval_then_with_the_count_left_out() -> None:
    clock = Clock()
    logger, out = limited_logger(clock)

    def fail() -> None:
        logger.error("Redis: connection refused")  # one place, one message

    for _ in range(5):
        fail()
        clock.now += 1
    logger.error("Redis: connection refused (another place)")
    logger.info("routine line")
    logger.info("routine line")
    assert out.getvalue().splitlines() == [
        "ERROR Redis: connection refused",
        "ERROR Redis: connection refused (another place)",
        "INFO routine line",
        "INFO routine line",
    ]
    clock.now += 30
    fail()
    assert out.getvalue().splitlines()[-1] == "ERROR Redis: connection refused (4 more like this in the last 35s)"
    fail()
    assert len(out.getvalue().splitlines()) == 5


async def test_the_forwarders_line_per_http_delivery_is_debug(settings) -> None:
    settings = hook_settings(settings)
    with http_receiver() as receiver:
        async with running_api(settings) as api:
            hook = {"name": "crm", "destination": {"type": "http", "url": receiver.url, "secret": SECRET}}
            hook_id = (await api.call("POST", "/hooks", json=hook)).json()["id"]
        lines = {}
        for level in ("info", "debug"):
            env = flusher_env(settings, TRACKER_LOG_LEVEL=level, TRACKER_HOOKS_SECRET_KEYS=SECRET_KEYS,
                              TRACKER_HOOKS_ALLOWED_DESTINATIONS=",".join(LOOPBACK_ALLOWED))  # fmt: skip
            result = subprocess.run([sys.executable, "-m", "forwarder.cli", "--test", str(hook_id)], env=env,
                                    capture_output=True, text=True, timeout=60)  # fmt: skip
            assert result.returncode == 0, result.stdout + result.stderr
            lines[level] = [line for line in result.stderr.splitlines() if "HTTP Request: POST" in line]
        assert len(receiver.accepted) == 2  # both deliveries were made
    assert lines["info"] == []
    [debug] = lines["debug"]
    assert " DEBUG httpx: HTTP Request: POST " in debug

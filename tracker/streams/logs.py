"""One logging setup for the edge, the flusher, the forwarder and the operator's CLI.

`setup_logging(settings)` configures the root logger from `TRACKER_LOG_LEVEL` and
`TRACKER_LOG_FORMAT`: text lines (`time LEVEL logger: message`) or, for log
shippers, one JSON object per line (`time`, `level`, `logger`, `message`, and
`exception` when there is one). The same dictionary goes to Granian, which
configures logging again in every worker process it starts.

Each program starts with one short `start_line` (version, where it listens or who
it is, Redis and Postgres hosts without credentials, shard count); what it says
beyond that at start is DEBUG. Libraries that log routine work at INFO (Granian's
worker lifecycle, httpx's line per request, so per action-hook delivery) are
moved to DEBUG by `DemoteInfo`. Warnings and errors that repeat are let through
at most once per `RepeatLimit.every_s` for the same message from the same place;
the next line that passes carries the count of those left out.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import logging
import logging.config
import sys
import threading
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tracker.config import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REPEAT_EVERY_S = 30.0
# Loggers of libraries whose INFO lines are routine: one per request or per worker start and stop.
_DEMOTED = ("_granian", "httpx")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a multi-line traceback stays inside its line, escaped."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = record.exc_text or self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class DemoteInfo(logging.Filter):
    """Turns the INFO lines of some loggers (and their children) into DEBUG ones, kept only at DEBUG.

    A handler's filter, not a logger's: a logger's filter misses what its children log (`_granian.serve`).
    """

    def __init__(self, loggers: tuple[str, ...] = _DEMOTED, keep: bool = False) -> None:
        super().__init__()
        self.names = tuple(loggers)
        self.children = tuple(name + "." for name in loggers)
        self.keep = keep

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        if record.name not in self.names and not record.name.startswith(self.children):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self.keep


class RepeatLimit(logging.Filter):
    """Lets a warning or error with the same message from the same place through at most once per `every_s`.

    The first one passes at once; the next one that passes says how many were left out
    in between. Lines below WARNING pass untouched: they are what the level is for.
    """

    _MAX_KEYS = 2048  # distinct messages remembered; older ones are forgotten first

    def __init__(self, every_s: float = REPEAT_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every_s = every_s
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # key -> (last written, left out since)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        key = (record.pathname, record.lineno, message)
        now = self.clock()
        with self._lock:
            last, left_out = self._seen.get(key, (None, 0))
            if last is not None and now - last < self.every_s:
                self._seen[key] = (last, left_out + 1)
                return False
            self._seen.pop(key, None)  # re-inserted last: the dict stays ordered oldest first
            self._seen[key] = (now, 0)
            if len(self._seen) > self._MAX_KEYS:
                del self._seen[next(iter(self._seen))]
        if left_out:
            record.msg = f"{message} ({left_out} more like this in the last {now - last:.0f}s)"
            record.args = None
        return True


def log_config(level: str = "info", fmt: str = "text", every_s: float = REPEAT_EVERY_S) -> dict[str, Any]:
    """The `logging.config.dictConfig` dictionary; Granian takes it as `log_dictconfig` for its workers."""
    numeric = logging.getLevelName(level.upper())
    formatter = {"()": f"{__name__}.JsonFormatter"} if fmt == "json" else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": formatter},
        "filters": {
            "repeats": {"()": f"{__name__}.RepeatLimit", "every_s": every_s},
            "demote": {"()": f"{__name__}.DemoteInfo", "loggers": _DEMOTED, "keep": numeric <= logging.DEBUG},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "filters": ["demote", "repeats"],
                "stream": "ext://sys.stderr",
            },
        },
        # Granian's own settings send its lines to stdout, past this handler: they come here instead.
        "loggers": {"_granian": {"propagate": True, "handlers": []}},
        "root": {"level": numeric, "handlers": ["stderr"]},
    }


def setup_logging(settings: Settings, level: str | None = None) -> dict[str, Any]:
    """Configure logging for this process (`level`, a --log-level flag, wins over the setting); returns the
    dictionary for child processes that configure logging again (Granian's workers)."""
    config = log_config(level or settings.log_level, settings.log_format)
    logging.config.dictConfig(copy.deepcopy(config))  # it takes apart what it is given
    logging.captureWarnings(True)  # a library's warning becomes one log line in the chosen format
    return config


def print_line_by_line() -> None:
    """Send what this process prints as each line ends. Python holds stdout in a block buffer whenever it is
    not a terminal (a pipe to `tee`, systemd's journal, container logs, a test reading the output), so a
    program's URLs and start lines would wait there until 8 KiB had piled up."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)


def version() -> str:
    try:
        return metadata.version("tracking-edge")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def host_of(url: str) -> str:
    """Where a Redis or Postgres URL points (host:port/database, or the socket), never who or with what secret."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    # After the last @: the user and password are before it, the query (which may hold one) is left out.
    hosts = parts.netloc.rpartition("@")[2]
    if not hosts:
        hosts = ",".join(parse_qs(parts.query).get("host", [])) or "localhost"
    return hosts + (parts.path if parts.path not in ("", "/") else "")


def start_line(program: str, settings: Settings, where: str) -> str:
    """The one line a program logs at start: `edge 0.1.0 on http://...: Redis ..., Postgres ..., 4 shards`."""
    redis = host_of(settings.redis_url) if settings.redis_url else "(none)"
    postgres = host_of(settings.database_url) if settings.database_url else "(none)"
    return (f"{program} {version()} {where}: Redis {redis}, Postgres {postgres}, "
            f"{settings.stream_shards} shards (prefix {settings.stream_prefix})")  # fmt: skip

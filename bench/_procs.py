"""Server subprocesses for a bench run: started in their own session, always stopped.

Each server gets its own process group, so a Ctrl-C in the terminal reaches
only the harness, which then stops every server it started (leader first, so
Granian and nginx shut their workers down cleanly; then anything left in the
group is killed).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


class Server:
    def __init__(self, name: str, process: subprocess.Popen[bytes], log_path: Path, port: int) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path
        self.port = port

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def descendants(self) -> list[int]:
        """Pids of every process below this one (Granian's workers, nginx's worker)."""
        found: list[int] = []
        todo = [self.pid]
        while todo:
            parent = todo.pop()
            try:
                children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                found.append(child)
                todo.append(child)
        return found


class Servers:
    """Starts servers and stops all of them, in reverse order, on `stop_all` (idempotent)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._running: list[Server] = []

    def start(
        self, name: str, argv: list[str], port: int, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Server:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=cwd, start_new_session=True,
            )  # fmt: skip
        server = Server(name, process, log_path, port)
        self._running.append(server)
        return server

    def stop(self, server: Server, timeout: float = 10.0) -> None:
        if server in self._running:
            self._running.remove(server)
        process = server.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left in its group (a worker that outlived its parent) goes too.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if process.poll() is None:
            process.wait(5)

    def stop_all(self) -> None:
        for server in reversed(list(self._running)):
            try:
                self.stop(server)
            except Exception as exc:  # keep stopping the others
                print(f"bench: could not stop {server.name} (pid {server.pid}): {exc!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(server: Server, path: str, timeout: float = 30.0) -> None:
    """Wait until `GET path` answers (any status), or fail with the server's log."""
    url = f"http://127.0.0.1:{server.port}{path}"
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}; log {server.log_path}:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} did not answer {url} within {timeout}s; log:\n{server.log_tail()}")
        time.sleep(0.1)

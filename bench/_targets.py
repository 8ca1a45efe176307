"""The servers under test (the edge, a bare Granian GIF app, nginx `empty_gif`): started, pinned, checked."""

from __future__ import annotations

import http.client
import os
import shutil
from pathlib import Path

from bench import _procs, _services
from bench._args import REPO, VENV_BIN
from bench._procs import Server, Servers


class Launcher:
    """Starts each server on a free port under `pin` (a taskset prefix, or nothing) and waits until it answers."""

    def __init__(self, servers: Servers, temp: Path, pin: list[str]) -> None:
        self.servers = servers
        self.temp = temp
        self.pin = pin

    def edge(self, workers: int, redis_url: str, database_url: str, signing_keys: str, prefix: str) -> Server:
        port = _procs.free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "TRACKER_SIGNING_KEYS": signing_keys,
            "TRACKER_STREAM_PREFIX": prefix,
            "TRACKER_SPOOL_DIR": str(self.temp / "spool"),
        }
        argv = [
            *self.pin, str(VENV_BIN / "edge"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning",
        ]  # fmt: skip
        server = self.servers.start("edge", argv, port, env=env, cwd=REPO)
        _procs.wait_http(server, "/health")
        return server

    def bare(self) -> Server:
        port = _procs.free_port()
        argv = [
            *self.pin, str(VENV_BIN / "granian"),
            "--interface", "asgi", "--loop", "uvloop", "--workers", "1",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "bench.bare_gif:app",
        ]  # fmt: skip
        server = self.servers.start("bare", argv, port, cwd=REPO)
        _procs.wait_http(server, "/")
        return server

    def nginx(self) -> Server:
        port = _procs.free_port()
        config = _services.nginx_config(self.temp / "nginx", port)
        nginx = shutil.which("nginx") or "nginx"
        test = os.system(f"{nginx} -t -q -c {config} -p {config.parent} 2>{config.parent}/config-test.log")
        if test != 0:
            raise RuntimeError(f"nginx rejected {config}: {(config.parent / 'config-test.log').read_text()}")
        argv = [*self.pin, nginx, "-c", str(config), "-p", str(config.parent)]
        server = self.servers.start("nginx", argv, port)
        _procs.wait_http(server, "/")
        return server


def expect(server: Server, path: str, status: int, location_prefix: str = "") -> None:
    """GET `path` once and raise unless the answer is `status` (200: the 43-byte GIF; 302: to `location_prefix`)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    problem = ""
    if response.status != status:
        problem = f"status {response.status}, expected {status}"
    elif status == 200 and len(body) != 43:
        problem = f"a {len(body)}-byte body, expected the 43-byte GIF"
    elif location_prefix and not (response.getheader("location") or "").startswith(location_prefix):
        problem = f"location {response.getheader('location')!r}"
    if problem:
        raise RuntimeError(f"{server.name}: GET {path[:40]}... answered {problem}; log:\n{server.log_tail()}")

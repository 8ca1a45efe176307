"""A whole stack for fault tests: its own Redis server, its own database, a real edge and real flushers.

Every part is a real process reached over real connections, so a fault is
injected the way an operator meets it: Redis killed or full, the database
refusing connections or read-only, a flusher SIGKILLed, a spool that fills.
Load is a bounded stream of open-pixel hits (one distinct profile each), and
the verdict is always the same: every answered hit is one stored row, or one
counted drop, and nothing is stored twice.

The programs run from `FAULT_BIN` (default: this interpreter's bin folder),
so the same scenarios can be run against another checkout's virtualenv.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from redis.asyncio import Redis

from tests.rigs.flusher_helpers import fill
from tracker.contract.tokens import Channel, TokenKind, mint
from tracker.domain.link_tables import Link, create_message
from tracker.ops.embedded import EmbeddedRedis

KEYS = {1: b"fault-rig-signing-key-0123456789"}
BIN = Path(os.environ.get("FAULT_BIN") or Path(sys.executable).parent)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Outcome:
    """One scenario's figures, as the closing table shows them."""

    scenario: str
    hits: int = 0  # answered 200 by the edge
    rows: int = 0  # events stored for the scenario's message
    dropped: int = 0  # drops the edge counted in /metrics
    resumed_s: float | None = None  # fault cleared -> the first row stored after it (the flusher moved again)
    caught_up_s: float | None = None  # load over (or fault cleared, if later) -> every answered hit stored or counted

    @property
    def lost(self) -> int:
        return max(0, self.hits - self.rows - self.dropped)

    @property
    def duplicated(self) -> int:
        return max(0, self.rows + self.dropped - self.hits)

    def line(self) -> str:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f} s"

        return (f"| {self.scenario} | {self.hits:,} | {self.rows:,} | {self.dropped:,} | {self.lost:,} | "
                f"{self.duplicated:,} | {seconds(self.resumed_s)} | {seconds(self.caught_up_s)} |")  # fmt: skip


@dataclass
class Rig:
    tmp: Path
    database_url: str
    redis_args: tuple[str, ...] = ()
    persist: bool = True
    prefix: str = "fault"
    env_extra: dict[str, str] = field(default_factory=dict)
    redis: EmbeddedRedis | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    edge_port: int = 0
    message_id: int = 0
    _next_profile: int = 1

    # -- services ---------------------------------------------------------------------------

    def start_redis(self) -> None:
        if self.redis is None:
            self.redis = EmbeddedRedis(self.tmp / "redis", port=free_port(), persist=self.persist,
                                       extra_args=self.redis_args)  # fmt: skip
        self.redis.start()

    def kill_redis(self) -> None:
        assert self.redis is not None and self.redis.process is not None
        self.redis.process.kill()
        self.redis.process.wait()
        self.redis.process = None

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return self.redis.url

    def client(self) -> Redis:
        return Redis.from_url(self.redis_url, socket_timeout=5)

    async def prepare(self) -> None:
        from tracker.contract.schema import migrate

        await migrate(self.database_url)
        conn = await asyncpg.connect(self.database_url)
        try:
            self.message_id, _version = await create_message(conn, "email", "fault", [Link("https://example.com/")])
        finally:
            await conn.close()

    def env(self, **variables: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "FLUSHER_"))}
        return {
            **base,
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "TRACKER_SIGNING_KEYS": ",".join(f"{k}:{v.decode()}" for k, v in KEYS.items()),
            "TRACKER_STREAM_PREFIX": self.prefix,
            "TRACKER_SPOOL_DIR": str(self.tmp / "spool"),
            "TRACKER_REDIS_TIMEOUT_S": "0.5",
            "TRACKER_REDIS_RETRY_S": "0.2",
            "FLUSHER_RETRY_MIN_S": "0.1",
            "FLUSHER_RETRY_MAX_S": "1",
            "FLUSHER_CLAIM_IDLE_MS": "2000",
            "FLUSHER_CLAIM_INTERVAL_S": "1",
            "FLUSHER_HEARTBEAT_TTL_S": "6",
            **self.env_extra,
            **variables,
        }

    # -- programs ---------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], **variables: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(args, env=self.env(**variables), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        log.close()
        self.procs[name] = process
        return process

    async def start_edge(self, workers: int = 1, **variables: str) -> None:
        self.edge_port = free_port()
        self._spawn("edge", [str(BIN / "edge"), "--port", str(self.edge_port), "--workers", str(workers),
                             "--log-level", "warning"], **variables)  # fmt: skip
        async with httpx.AsyncClient(base_url=self.base_url) as http:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/health")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise AssertionError(f"the edge did not start; see {self.tmp / 'edge.log'}")

    def start_flusher(self, name: str = "flusher-1", **variables: str) -> subprocess.Popen:
        return self._spawn(name, [str(BIN / "flusher"), "--consumer", name, "--log-level", "info"], **variables)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        if sig == signal.SIGKILL:
            process.wait()

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def close(self) -> None:
        for name in list(self.procs):
            process = self.procs.pop(name)
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    await asyncio.to_thread(process.wait, 10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        if self.redis is not None:
            self.redis.stop()

    # -- load and verdict -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.edge_port}"

    def _paths(self, count: int) -> list[str]:
        first, self._next_profile = self._next_profile, self._next_profile + count
        return ["/o/" + mint(KEYS, 1, TokenKind.OPEN, Channel.EMAIL, self.message_id, p)
                for p in range(first, first + count)]  # fmt: skip

    def edge_url(self, connection: int) -> str:
        """The edge a load connection talks to (one here; a rig with several spreads them)."""
        return self.base_url

    async def load(self, seconds: float, rate: float, connections: int = 8) -> int:
        """Open hits at about `rate` a second for `seconds` (bounded in count and time); answered 200s."""
        paths = self._paths(int(seconds * rate))
        answered = 0
        started = time.monotonic()
        queue: asyncio.Queue[str] = asyncio.Queue()
        for path in paths:
            queue.put_nowait(path)

        async def worker(http: httpx.AsyncClient, index: int) -> None:
            nonlocal answered
            base = self.edge_url(index)
            sent = 0
            while not queue.empty():
                path = queue.get_nowait()
                due = started + (index + sent * connections) / rate
                sent += 1
                if (pause := due - time.monotonic()) > 0:
                    await asyncio.sleep(pause)
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(base + path)).status_code == 200:
                        answered += 1

        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=5) as http:
            await asyncio.wait_for(asyncio.gather(*(worker(http, i) for i in range(connections))),
                                   seconds * 3 + 30)  # fmt: skip
        return answered

    async def rows(self) -> tuple[int, int]:
        """(events stored for the message, the flusher's `opened` total counter for it)."""
        conn = await asyncpg.connect(self.database_url)
        try:
            rows = await conn.fetchval("select count(*) from events where message_id = $1", self.message_id)
            total = await conn.fetchval(
                "select coalesce(sum(total), 0) from message_counters where message_id = $1 and kind = 'opened'",
                self.message_id,
            )
            return rows, int(total or 0)
        finally:
            await conn.close()

    async def fill_redis(self) -> None:
        """Fill Redis up to a `maxmemory` set now, so that every write is refused (tests.rigs.flusher_helpers.fill)."""
        async with self.client() as client:
            await fill(client, headroom=0)

    async def free_redis(self) -> None:
        """Delete what `fill_redis` added (DEL works on a full Redis)."""
        async with self.client() as client:
            keys = [key async for key in client.scan_iter(match="filler:*")]
            keys += [key async for key in client.scan_iter(match="more:*")]
            await client.delete(*keys)

    async def dropped(self) -> int:
        """Events the edge counted as dropped (`edge_spool_dropped_total` in /metrics)."""
        return int(await self.metric("edge_spool_dropped_total"))

    async def metric(self, name: str) -> float:
        """The sum of a metric's samples in the edge's /metrics."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as http:
            text = (await http.get("/metrics")).text
        found = re.findall(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+]+)$", text, re.M)
        return sum(float(value) for value in found)

    def cleared(self) -> asyncio.Task[float | None]:
        """Call when the fault is cleared: a task giving the seconds until the next row is stored."""
        at = time.monotonic()

        async def first_row() -> float | None:
            baseline = (await self.rows())[0]
            while time.monotonic() - at < 120:
                if (await self.rows())[0] > baseline:
                    return round(time.monotonic() - at, 1)
                await asyncio.sleep(0.1)
            return None

        return asyncio.create_task(first_row())

    async def settle(self, outcome: Outcome, resumed: asyncio.Task[float | None], timeout: float = 90.0) -> Outcome:
        """Wait until every answered hit is stored or counted as dropped; fill in the figures."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            outcome.rows, _total = await self.rows()
            with contextlib.suppress(httpx.TransportError):
                outcome.dropped = await self.dropped()
            if outcome.rows + outcome.dropped >= outcome.hits:
                outcome.caught_up_s = round(time.monotonic() - started, 1)
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        try:
            outcome.resumed_s = await asyncio.wait_for(resumed, 2)  # rows came, so it is done or about to be
        except TimeoutError:
            outcome.resumed_s = None
        return outcome


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)

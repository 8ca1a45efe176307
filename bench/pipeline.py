"""The whole pipeline under a steady load: edge accept -> row in Postgres latency, and edge RSS over time.

    .venv/bin/python -m bench.pipeline --rate 20000 --seconds 30          # latency at 20k events/s
    .venv/bin/python -m bench.pipeline --rate 5000 --seconds 600 --soak   # 10-minute soak: RSS over time

Starts one edge worker and one flusher (Redis and an admin Postgres URL from
REDIS_URL / DATABASE_URL, or embedded servers), seeds messages, and drives the
edge's open pixel with wrk at a fixed rate (each connection waits between
requests; `--connections` x 1000 / delay = rate). One request in 100 carries a
token of a "probe" message; a poller asks Postgres every 10 ms for new probe
rows and takes `seen - ts` (ts is the edge's accept time, in the event) as the
latency, so the figure includes the edge's batching, Redis, the flusher's
batching and the commit (resolution about 10 ms). Soak mode samples the edge
worker's RSS every 10 s and judges it flat when the last sample is within 5 MB
of the one after the first minute.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from bench._procs import Servers, free_port, wait_http
from bench._services import create_database, drop_database
from bench._wrk import find_wrk
from tracker.contract.schema import migrate
from tracker.contract.tokens import Channel, TokenKind, mint
from tracker.domain.link_tables import create_message
from tracker.ops.embedded import EmbeddedPostgres, EmbeddedRedis

# A constant-rate variant of the rotating script: delay() spaces each connection's requests.
RATE_LUA = r"""
local requests, count, next_index, delay_ms = {}, 0, 0, 1
function init(args)
  delay_ms = tonumber(args[2])
  for path in io.lines(args[1]) do
    if #path > 0 then count = count + 1; requests[count] = wrk.format("GET", path) end
  end
  next_index = math.random(count) - 1
end
function delay() return delay_ms end
function request() next_index = next_index % count + 1; return requests[next_index] end
function done(summary, latency, r)
  io.write(string.format("BENCH requests=%d duration_us=%d errors=%d p50_us=%d p99_us=%d\n", summary.requests,
    summary.duration, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status
    + summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker_pid(parent: int) -> int:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return int(children[0])


async def seed(database_url: str, keys: dict[int, bytes]) -> tuple[list[str], int]:
    """Paths: 99 opens of ordinary messages for each open of the probe message."""
    await migrate(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        ordinary = [(await create_message(conn, "email", f"pipeline {n}", []))[0] for n in range(10)]
        probe = (await create_message(conn, "email", "pipeline probe", []))[0]
        await conn.execute("insert into profiles (id) select g from generate_series(1, 10000) g on conflict do nothing")
    finally:
        await conn.close()
    paths = []
    for i in range(10_000):
        message_id = probe if i % 100 == 0 else ordinary[i % 10]
        paths.append("/o/" + mint(keys, 1, TokenKind.OPEN, Channel.EMAIL, message_id, 1 + i))
    return paths, probe


async def poll_probe_latency(database_url: str, probe: int, stop: asyncio.Event) -> list[float]:
    """Seconds from each probe event's accept time to the poll that first saw its row."""
    conn = await asyncpg.connect(database_url)
    latencies: list[float] = []
    last_ts = None
    try:
        while not stop.is_set():
            rows = await conn.fetch(
                "select ts from events where message_id = $1 and ($2::timestamptz is null or ts > $2) order by ts",
                probe,
                last_ts,
            )
            seen = time.time()
            for row in rows:
                latencies.append(seen - row["ts"].timestamp())
            if rows:
                last_ts = rows[-1]["ts"]
            await asyncio.sleep(0.01)
    finally:
        await conn.close()
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--rate", type=int, default=20_000, help="requests per second [default: %(default)s]")
    parser.add_argument("--seconds", type=float, default=30, help="length of the load [default: %(default)s]")
    parser.add_argument("--connections", type=int, default=40, help="wrk connections [default: %(default)s]")
    parser.add_argument("--soak", action="store_true", help="sample the edge worker's RSS every 10 s")
    args = parser.parse_args(argv)
    delay_ms = max(1, round(args.connections * 1000 / args.rate))
    workdir = Path(tempfile.mkdtemp(prefix="trk-pipeline-"))
    servers = Servers(workdir)
    embedded: list = []
    redis_url = os.environ.get("REDIS_URL", "")
    admin_url = os.environ.get("DATABASE_URL", "")
    database = None
    prefix = ""
    try:
        if not redis_url:
            embedded.append(EmbeddedRedis(workdir / "redis", persist=False))
            redis_url = embedded[-1].start()
        if admin_url:
            database, database_url = create_database(admin_url)
        else:
            embedded.append(EmbeddedPostgres(workdir / "pg"))
            database_url = embedded[-1].start()
        keys = {1: secrets.token_urlsafe(24).encode()}
        paths, probe = asyncio.run(seed(database_url, keys))
        (workdir / "paths.txt").write_text("\n".join(paths) + "\n")
        (workdir / "rate.lua").write_text(RATE_LUA)
        prefix = "trkpipe" + secrets.token_hex(3)
        env = {
            **os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url, "TRACKER_STREAM_PREFIX": prefix,
            "TRACKER_SIGNING_KEYS": f"1:{keys[1].decode()}", "TRACKER_SPOOL_DIR": str(workdir / "spool"),
            "FLUSHER_CONSUMER": "pipeline", "FLUSHER_BATCH_MAX_AGE_MS": "50",
        }  # fmt: skip
        port = free_port()
        edge = servers.start("edge", [sys.executable, "-m", "edge.serve", "--port", str(port), "--log-level",
                                      "warning"], port, env)  # fmt: skip
        servers.start("flusher", [sys.executable, "-m", "flusher.cli", "--log-level", "warning"], 0, env)
        wait_http(edge, "/health")
        time.sleep(1)
        worker = worker_pid(edge.pid)
        print(f"edge worker {worker}, target {args.rate} req/s: {args.connections} connections, "
              f"{delay_ms} ms between requests each; {os.cpu_count()} cores", flush=True)  # fmt: skip
        wrk = subprocess.Popen(
            [find_wrk(), "-t2", f"-c{args.connections}", f"-d{args.seconds:g}s", "--latency", "-s",
             str(workdir / "rate.lua"), f"http://127.0.0.1:{port}", "--", str(workdir / "paths.txt"), str(delay_ms)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

        async def observe() -> tuple[list[float], list[tuple[float, float]]]:
            stop = asyncio.Event()
            poller = asyncio.create_task(poll_probe_latency(database_url, probe, stop))
            samples: list[tuple[float, float]] = []
            started = time.monotonic()
            while wrk.poll() is None:
                await asyncio.sleep(10 if args.soak else 0.5)
                if args.soak and wrk.poll() is None:
                    samples.append((time.monotonic() - started, rss_mb(worker)))
                    print(f"  t={samples[-1][0]:5.0f}s  edge worker RSS {samples[-1][1]:.1f} MB", flush=True)
            await asyncio.sleep(2)  # the last batches reach Postgres
            stop.set()
            return await poller, samples

        latencies, samples = asyncio.run(observe())
        out = wrk.stdout.read() if wrk.stdout else ""
        fields = dict(part.split("=") for part in out.split("BENCH ", 1)[-1].split()) if "BENCH" in out else {}
        achieved = int(fields.get("requests", 0)) / (int(fields.get("duration_us", 1)) / 1e6)
        print(f"load: {achieved:,.0f} req/s achieved, {fields.get('errors', '?')} errors, HTTP p50 "
              f"{int(fields.get('p50_us', 0)) / 1000:.2f} ms, p99 {int(fields.get('p99_us', 0)) / 1000:.2f} ms")
        if latencies:
            print(f"edge accept -> row visible in Postgres ({len(latencies)} probe events): "
                  f"p50 {percentile(latencies, 50) * 1000:.0f} ms, p99 {percentile(latencies, 99) * 1000:.0f} ms, "
                  f"max {max(latencies) * 1000:.0f} ms")  # fmt: skip
        else:
            print("no probe event reached Postgres")
        if samples:
            settled = next((rss for t, rss in samples if t >= 60), samples[0][1])
            last = samples[-1][1]
            flat = abs(last - settled) <= 5
            print(f"edge worker RSS: {settled:.1f} MB after the first minute, {last:.1f} MB at the end, "
                  f"median {statistics.median(r for _, r in samples):.1f} MB: "
                  f"{'flat' if flat else 'NOT flat'}, {'within' if last <= 80 else 'OVER'} 80 MB")  # fmt: skip
        return 0 if latencies else 1
    finally:
        servers.stop_all()
        try:
            import redis

            client = redis.Redis.from_url(redis_url)
            keys_found = list(client.scan_iter(match=f"{prefix}:*", count=1000)) if prefix else []
            if keys_found:
                client.delete(*keys_found)
            client.close()
        except Exception as exc:
            print(f"bench: Redis clean-up failed: {exc!r}")
        if database:
            drop_database(admin_url, database)
        for server in reversed(embedded):
            server.stop()


if __name__ == "__main__":
    sys.exit(main())

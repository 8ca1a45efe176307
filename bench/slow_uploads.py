"""What 1,000 slow, unauthenticated provider report uploads cost an edge worker, and its pixel latency meanwhile.

    .venv/bin/python -m bench.slow_uploads --connections 1000 --seconds 30

Starts one edge worker (Granian, settings from REDIS_URL / DATABASE_URL or embedded servers) with
Mailgun reports on: Mailgun's signature is inside the body, so the edge must read a body before it
can refuse it, the worst case for memory. From this process (loopback only) it opens N uploads to
`/reports/email/mailgun`, each declaring 1,048,576 bytes, sending 1,000,000 of them at once and
then one byte every 5 s, until the edge answers or `--seconds` run out. Meanwhile it samples the
worker's RSS and, from a separate process, times keep-alive `GET /o/<token>` pixels (first idle,
then under the uploads). Prints the RSS growth (target < 100 MB), pixel p99 idle and under load
(target < 5 ms) and how the uploads were answered.

`--budget-mb` and `--body-timeout` set TRACKER_REPORT_UPLOAD_BUDGET_BYTES and
TRACKER_REPORT_BODY_TIMEOUT_S; large values (e.g. 4096 and 600) show the edge as it was before both.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from redis.asyncio import Redis

from bench.held_reads import rss_mb, worker_pid
from tracker.contract.tokens import Channel, TokenKind, mint
from tracker.ops.embedded import EmbeddedPostgres, EmbeddedRedis

DECLARED, SENT_AT_ONCE, TRICKLE_S = 1_048_576, 1_000_000, 5.0


def probe_pixels(port: int, path: str, seconds: float, results: multiprocessing.Queue) -> None:
    """Keep-alive GETs of one pixel, about 300 a second, for `seconds`; puts the latencies (ms) on `results`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies: list[float] = []
    errors = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        try:
            connection.request("GET", path)
            connection.getresponse().read()
            latencies.append((time.perf_counter() - started) * 1000)
        except (OSError, http.client.HTTPException):
            errors += 1
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        time.sleep(0.003)
    results.put((latencies, errors))


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


async def slow_upload(port: int, deadline: float, statuses: Counter[str]) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        statuses["connect failed"] += 1
        return
    head = (f"POST /reports/email/mailgun HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {DECLARED}\r\n\r\n").encode()  # fmt: skip
    answer = asyncio.ensure_future(reader.readline())
    try:
        writer.write(head + b'{"signature": {"timestamp": "1", "token": "x", "signature": "y"}, "event-data": "')
        chunk = b"x" * 65536
        sent = 0
        while sent < SENT_AT_ONCE and not answer.done():
            writer.write(chunk[: min(len(chunk), SENT_AT_ONCE - sent)])
            await writer.drain()
            sent += len(chunk)
        while not answer.done() and time.monotonic() < deadline:
            await asyncio.wait([answer], timeout=min(TRICKLE_S, max(0.0, deadline - time.monotonic())))
            if not answer.done():
                writer.write(b"x")
                await writer.drain()
        line = answer.result() if answer.done() else b""
        statuses[line.split()[1].decode() if len(line.split()) > 1 else "no answer"] += 1
    except (OSError, asyncio.IncompleteReadError):
        line = answer.result() if answer.done() and not answer.exception() else b""
        statuses[line.split()[1].decode() if len(line.split()) > 1 else "reset"] += 1
    finally:
        answer.cancel()
        writer.close()


async def sample_rss(pid: int, until: asyncio.Event, samples: list[float]) -> None:
    while not until.is_set():
        samples.append(rss_mb(pid))
        await asyncio.sleep(0.25)


async def run(args: argparse.Namespace) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.connections + 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(args.connections + 1024, hard), hard))
    workdir = Path(tempfile.mkdtemp(prefix="trk-uploads-"))
    servers: list = []
    redis_url, database_url = os.environ.get("REDIS_URL") or "", os.environ.get("DATABASE_URL") or ""
    if not redis_url:
        servers.append(EmbeddedRedis(workdir / "redis", persist=False))
        redis_url = servers[-1].start()
    if not database_url:
        servers.append(EmbeddedPostgres(workdir / "pg"))
        database_url = servers[-1].start()
    prefix = "uploadbench" + secrets.token_hex(3)
    keys = {1: secrets.token_urlsafe(24).encode()}
    env = {
        **os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url, "TRACKER_STREAM_PREFIX": prefix,
        "TRACKER_SIGNING_KEYS": f"1:{keys[1].decode()}", "TRACKER_SPOOL_DIR": str(workdir / "spool"),
        "TRACKER_REPORT_MAILGUN_SIGNING_KEY": secrets.token_hex(16),
        "TRACKER_REPORT_UPLOAD_BUDGET_BYTES": str(args.budget_mb * 2**20),
        "TRACKER_REPORT_BODY_TIMEOUT_S": str(args.body_timeout),
    }  # fmt: skip
    edge = subprocess.Popen([sys.executable, "-m", "edge.serve", "--port", str(args.port), "--backlog", "8192",
                             "--log-level", "error"], env=env)  # fmt: skip
    pixel = "/o/" + mint(keys, 1, TokenKind.OPEN, Channel.EMAIL, 1, 1)
    spawn = multiprocessing.get_context("spawn")
    try:
        for _ in range(100):
            try:
                http.client.HTTPConnection("127.0.0.1", args.port, timeout=1).request("GET", "/health")
                break
            except OSError:
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        worker = worker_pid(edge.pid)
        idle_results: multiprocessing.Queue = spawn.Queue()
        prober = spawn.Process(target=probe_pixels, args=(args.port, pixel, 3.0, idle_results))
        prober.start()
        idle, _ = await asyncio.to_thread(idle_results.get)
        prober.join()
        base_rss = rss_mb(worker)
        load_results: multiprocessing.Queue = spawn.Queue()
        prober = spawn.Process(target=probe_pixels, args=(args.port, pixel, args.seconds, load_results))
        prober.start()
        statuses: Counter[str] = Counter()
        samples: list[float] = []
        done = asyncio.Event()
        sampler = asyncio.ensure_future(sample_rss(worker, done, samples))
        deadline = time.monotonic() + args.seconds
        uploads = []
        for n in range(args.connections):
            uploads.append(asyncio.ensure_future(slow_upload(args.port, deadline, statuses)))
            if n % 100 == 99:
                await asyncio.sleep(0.05)  # open them over half a second rather than all in one burst
        await asyncio.gather(*uploads)
        loaded, errors = await asyncio.to_thread(load_results.get)
        prober.join()
        done.set()
        await sampler
        peak = max(samples)
        print(f"uploads: {args.connections} to /reports/email/mailgun, {DECLARED} bytes declared, "
              f"{SENT_AT_ONCE} sent at once, then 1 byte per {TRICKLE_S:g} s; budget {args.budget_mb} MB, "
              f"body timeout {args.body_timeout:g} s")  # fmt: skip
        print("answers: " + ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items())))
        print(f"edge worker RSS: {base_rss:.1f} MB before, {peak:.1f} MB peak: growth {peak - base_rss:.1f} MB "
              f"(target < 100 MB)")  # fmt: skip
        print(f"pixel /o/ p99: {p99(idle):.2f} ms idle ({len(idle)} requests), {p99(loaded):.2f} ms under the "
              f"uploads ({len(loaded)} requests, {errors} errors) (target < 5 ms)")  # fmt: skip
        return 0
    finally:
        edge.terminate()
        edge.wait(20)
        redis = Redis.from_url(redis_url)
        found = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
        if found:
            await redis.delete(*found)
        await redis.aclose()
        for server in reversed(servers):
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slow_uploads", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--connections", type=int, default=1000, help="slow uploads [default: %(default)s]")
    parser.add_argument("--seconds", type=float, default=30, help="how long the run lasts [default: %(default)s]")
    parser.add_argument("--budget-mb", type=int, default=32, help="upload budget, MiB [default: %(default)s]")
    parser.add_argument("--body-timeout", type=float, default=10, help="body deadline, s [default: %(default)s]")
    parser.add_argument("--port", type=int, default=8098, help="edge port [default: %(default)s]")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

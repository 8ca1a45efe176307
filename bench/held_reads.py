"""What thousands of held read beacons cost an edge worker: RSS and CPU, measured.

    .venv/bin/python -m bench.held_reads --connections 5000 --hold 30

Starts one edge worker (Granian, settings from REDIS_URL / DATABASE_URL or
embedded servers), opens N connections to `/r/{token}` from this process with
plain asyncio sockets, keeps them open for `--hold` seconds, then closes them.
Prints the worker's RSS before, while holding and after, the CPU seconds it
used while holding (per second and per connection), and how many `read`
events reached the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

from tracker.contract.events import decode_batch
from tracker.contract.keys import ENTRY_FIELD, event_streams
from tracker.contract.tokens import Channel, TokenKind, mint
from tracker.ops.embedded import EmbeddedPostgres, EmbeddedRedis


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_pid(parent: int) -> int:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    if not children:
        raise RuntimeError("the edge has no worker process yet")
    return int(children[0])


async def open_reader(port: int, path: str, opened: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: held-reads\r\n\r\n".encode())
    await writer.drain()
    await reader.read(64)  # the response head and the first GIF byte
    opened.append(writer)


async def run(args: argparse.Namespace) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.connections * 2 + 1024
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    workdir = Path(tempfile.mkdtemp(prefix="trk-held-"))
    servers: list = []
    redis_url = os.environ.get("REDIS_URL") or ""
    database_url = os.environ.get("DATABASE_URL") or ""
    if not redis_url:
        servers.append(EmbeddedRedis(workdir / "redis", persist=False))
        redis_url = servers[-1].start()
    if not database_url:
        servers.append(EmbeddedPostgres(workdir / "pg"))
        database_url = servers[-1].start()
    prefix = "heldbench" + secrets.token_hex(3)
    keys = {1: secrets.token_urlsafe(24).encode()}
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "TRACKER_SIGNING_KEYS": f"1:{keys[1].decode()}",
        "TRACKER_STREAM_PREFIX": prefix,
        "TRACKER_SPOOL_DIR": str(workdir / "spool"),
        "TRACKER_READ_MIN_S": "1",
        "TRACKER_READ_MAX_S": str(args.hold * 4),
        "TRACKER_READ_TICK_S": str(args.tick),
    }
    edge = subprocess.Popen(
        [sys.executable, "-m", "edge.serve", "--port", str(args.port), "--backlog", "8192", "--log-level", "warning"],
        env=env,
    )
    redis = Redis.from_url(redis_url)
    writers: list = []
    try:
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", args.port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        worker = worker_pid(edge.pid)
        base_rss = rss_mb(worker)
        paths = [
            "/r/" + mint(keys, 1, TokenKind.READ, Channel.EMAIL, 1, profile) for profile in range(args.connections)
        ]
        t0 = time.monotonic()
        for start in range(0, len(paths), 500):
            await asyncio.gather(*(open_reader(args.port, p, writers) for p in paths[start : start + 500]))
        opened_in = time.monotonic() - t0
        print(f"opened {len(writers)} held reads in {opened_in:.1f}s", flush=True)
        cpu0, w0 = cpu_s(worker), time.monotonic()
        samples = []
        while time.monotonic() - w0 < args.hold:
            await asyncio.sleep(min(5, args.hold))
            samples.append(rss_mb(worker))
        held_cpu = cpu_s(worker) - cpu0
        held_for = time.monotonic() - w0
        for writer in writers:
            writer.close()
        await asyncio.sleep(2)
        after_rss = rss_mb(worker)
        reads = 0
        for _ in range(20):
            reads = 0
            for stream in event_streams(prefix, 4):
                for _id, fields in await redis.xrange(stream):
                    reads += sum(1 for e in decode_batch(fields[ENTRY_FIELD]) if e.kind == "read")
            if reads >= len(writers):
                break
            await asyncio.sleep(0.5)
        peak = max(samples)
        each_kb = (peak - base_rss) * 1024 / max(len(writers), 1)
        share = 100 * held_cpu / held_for
        print(f"edge worker RSS: {base_rss:.1f} MB idle, {peak:.1f} MB holding {len(writers)} "
              f"(+{each_kb:.1f} KB each), {after_rss:.1f} MB after")  # fmt: skip
        print(f"edge worker CPU while holding: {held_cpu:.2f} s over {held_for:.0f} s "
              f"= {share:.1f}% of a core (one byte per {args.tick:g} s per connection)")  # fmt: skip
        print(f"read events in the stream: {reads} of {len(writers)}")
        return 0 if reads == len(writers) else 1
    finally:
        for writer in writers:
            writer.close()
        edge.terminate()
        edge.wait(20)
        keys_found = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
        if keys_found:
            await redis.delete(*keys_found)
        await redis.aclose()
        for server in reversed(servers):
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.held_reads", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--connections", type=int, default=5000, help="held reads [default: %(default)s]")
    parser.add_argument("--hold", type=float, default=30, help="seconds to hold them [default: %(default)s]")
    parser.add_argument("--tick", type=float, default=2.0, help="TRACKER_READ_TICK_S [default: %(default)s]")
    parser.add_argument("--port", type=int, default=8097, help="edge port [default: %(default)s]")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

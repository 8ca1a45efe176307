"""Flusher drain rate without hooks and with three hooks active (two HTTP receivers, a RabbitMQ queue).

    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python -m bench.hooks_drain \\
        --admin-url postgresql://postgres@127.0.0.1:5432/postgres --events 100000 --rounds 5

Same workload as bench.flusher_drain. Rounds alternate: a flusher in burst mode
with no hook (the baseline), then the same with three hooks defined and a
`hooks` worker process delivering to them at the same time (the receivers run in
another process, so the flusher's process does only its own work plus the copy
to the committed streams). Prints the drain rate of each round, the medians and
their ratio (the issue's bound: >= 0.80), and how long the hooks took to deliver
everything after the flusher was done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import asyncpg
from redis.asyncio import Redis

from bench._services import database_url_for
from bench.flusher_drain import make_events, push, seed
from flusher.worker import Flusher
from tracker.config import Settings
from tracker.contract.schema import migrate
from tracker.domain.hook_streams import backlog_entries, create_groups, set_hooks_count

# The receivers and RabbitMQ run on this machine: action hooks refuse loopback unless it is allowed.
_LOOPBACK = {"TRACKER_HOOKS_ALLOWED_DESTINATIONS": "127.0.0.0/8"}


def serve_receiver(port: int) -> None:
    """A plain HTTP receiver answering 200 to every POST (run in its own process)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


async def add_hooks(conn: asyncpg.Connection, redis: Redis, settings: Settings, ports: list[int], amqp_url: str,
                    queue: str) -> None:  # fmt: skip
    destinations = [{"type": "http", "url": f"http://127.0.0.1:{port}/", "max_events": 1000} for port in ports]
    if amqp_url:
        destinations.append({"type": "amqp", "url": amqp_url, "queue": queue, "max_events": 1000})
    for n, destination in enumerate(destinations):
        hook_id = await conn.fetchval(
            "insert into hooks (name, destination, config, secrets) values ($1, $2, '{}', $3) returning id",
            f"bench{n}", destination["type"], json.dumps(destination),
        )  # fmt: skip
        await create_groups(redis, settings.stream_prefix, settings.stream_shards, hook_id)
    await set_hooks_count(redis, settings.stream_prefix, settings.stream_shards, len(destinations))


async def bench(args: argparse.Namespace) -> None:
    name = "trk_bench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(args.admin_url)
    await admin.execute(f'create database "{name}"')
    url = database_url_for(args.admin_url, name)
    redis = Redis.from_url(args.redis_url)
    ports = [args.base_port, args.base_port + 1]
    receivers = [subprocess.Popen([sys.executable, "-m", "bench.hooks_drain", "--receiver", str(p)]) for p in ports]
    queue = "trk-bench-" + secrets.token_hex(4)
    amqp = None
    if args.amqp_url:
        import aio_pika

        amqp = await aio_pika.connect(args.amqp_url)
        channel = await amqp.channel()
        await channel.declare_queue(queue)
    rates: dict[bool, list[float]] = {False: [], True: []}
    try:
        await migrate(url)
        conn = await asyncpg.connect(url)
        profile_ids, message_ids = await seed(conn, args.profiles, args.messages)
        rng = random.Random(args.seed)
        for round_ in range(1, 2 * args.rounds + 1):
            with_hooks = round_ % 2 == 0
            prefix = "bench" + secrets.token_hex(3)
            events = make_events(args.events, profile_ids, message_ids, rng)
            await push(redis, prefix, args.shards, events, args.per_entry)
            settings = Settings.from_env(
                {**os.environ, "REDIS_URL": args.redis_url, "DATABASE_URL": url, **_LOOPBACK},
                stream_prefix=prefix, stream_shards=args.shards, flusher={"consumer": "bench"},
            )  # fmt: skip
            worker = None
            if with_hooks:
                await conn.execute("delete from hooks")
                await add_hooks(conn, redis, settings, ports, args.amqp_url, queue)
            if with_hooks and not args.no_worker:
                env = {**os.environ, "REDIS_URL": args.redis_url, "DATABASE_URL": url, **_LOOPBACK,
                       "TRACKER_STREAM_PREFIX": prefix, "TRACKER_STREAM_SHARDS": str(args.shards)}  # fmt: skip
                worker = subprocess.Popen([sys.executable, "-m", "forwarder.cli", "--log-level", "warning"],
                                          env=env)  # fmt: skip
            flusher = Flusher(settings, burst=True)
            started = time.perf_counter()
            await flusher.run()
            elapsed = time.perf_counter() - started
            rate = flusher.stats["events"] / elapsed
            rates[with_hooks].append(rate)
            line = f"round {round_} ({'3 hooks' if with_hooks else 'no hooks'}): {rate:,.0f} events/s"
            if worker is not None:
                hook_ids = [row[0] for row in await conn.fetch("select id from hooks")]
                while True:
                    left = [await backlog_entries(redis, prefix, args.shards, h) for h in hook_ids]
                    if not any(left) or time.perf_counter() - started > args.hooks_timeout:
                        break
                    await asyncio.sleep(0.05)
                line += f"; hooks delivered everything {time.perf_counter() - started:.2f}s after the start"
                line += "" if not any(left) else f" (NOT done: backlog {left})"
                worker.terminate()
                worker.wait(30)
            print(line, flush=True)
            keys = [key async for key in redis.scan_iter(match=f"{prefix}:*")]
            if keys:
                await redis.delete(*keys)
        await conn.close()
        base, hooked = statistics.median(rates[False]), statistics.median(rates[True])
        print(f"median without hooks {base:,.0f} events/s, with 3 hooks {hooked:,.0f} events/s:"
              f" ratio {hooked / base:.2f} (bound >= 0.80)")  # fmt: skip
    finally:
        for receiver in receivers:
            receiver.terminate()
            receiver.wait()
        if amqp is not None:
            channel = await amqp.channel()
            await channel.queue_delete(queue)
            await amqp.close()
        await redis.aclose()
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each kind (they alternate)")
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--per-entry", type=int, default=256)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", ""), help="empty: two HTTP hooks only")
    parser.add_argument("--base-port", type=int, default=18931, help="the two receivers' ports: this and the next")
    parser.add_argument("--hooks-timeout", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-worker", action="store_true",
                        help="hooks defined but no worker running: the flusher's own cost of forwarding only")
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver:
        serve_receiver(args.receiver)
        return 0
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(bench(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

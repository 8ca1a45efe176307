"""Flusher drain rate: N events pushed to the streams, timed until they are all in Postgres.

    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python -m bench.flusher_drain \\
        --admin-url postgresql://postgres@127.0.0.1:5432/postgres --events 200000 --rounds 5

Makes a throwaway database (dropped at the end), profiles and messages, then per
round: pushes the events as the edge writes them (entries of --per-entry events
per shard, 1% duplicate ids), runs one flusher in burst mode in this process
and times it from start to exit (every event committed and acknowledged).

Each round also times the ceiling in the same run: one binary COPY of the same
rows (the distinct events, shaped as the events table's) into a table with a
bytea primary key, before the drain in odd rounds and after it in even ones
(ABBA over rounds). Prints events/s per round, the drain's ratio to that COPY,
each batch step's share of the time the sinks spent storing (flusher.sink's
steps, 1% or more), and the medians. `--flushers 2` runs two flushers (two
consumers of the same group, as two processes would be) on the one database.
Every round samples the flushers' Postgres sessions every 50 ms and prints how
many of the active ones were waiting for a lock another transaction held, and
in which statement. --profile writes a cProfile of the last round.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import logging
import os
import random
import secrets
import statistics
import sys
import time

import asyncpg
from redis.asyncio import Redis

from bench._services import database_url_for
from flusher.worker import Flusher
from tracker.config import Settings
from tracker.contract.events import Event, EventIds, encode_batch, encode_event
from tracker.contract.keys import ENTRY_FIELD, event_stream, shard_for
from tracker.contract.schema import migrate
from tracker.domain.link_tables import Link, create_message
from tracker.domain.verdict_store import moment

# Roughly what a campaign sends back: deliveries and opens dominate, clicks follow.
RAW_TABLE = """
create unlogged table if not exists bench_raw_copy (
    id bytea primary key, ts timestamptz, kind text, channel text, message_id bigint, profile_id bigint,
    link_version integer, link_index integer, ua_class text, ip_prefix text, data jsonb,
    signals integer, ua_family text, verdict text, reasons text[]
)
"""
RAW_COLUMNS = ("id", "ts", "kind", "channel", "message_id", "profile_id", "link_version", "link_index",
               "ua_class", "ip_prefix", "data", "signals", "ua_family", "verdict", "reasons")  # fmt: skip
MIX = [
    ("delivered", 38), ("opened", 30), ("clicked", 14), ("read", 8), ("sent", 5), ("soft_bounce", 1),
    ("hard_bounce", 1), ("unsubscribed", 1), ("complained", 1), ("confirmed", 1),
]  # fmt: skip


async def seed(conn: asyncpg.Connection, profiles: int, messages: int) -> tuple[list[int], list[int]]:
    await conn.execute("insert into profile_fields (name, type) values ('clicked_link', 'boolean')")
    await conn.copy_records_to_table(
        "profiles", records=[(f"b{n}@example.com",) for n in range(profiles)], columns=["email"]
    )
    profile_ids = [row[0] for row in await conn.fetch("select id from profiles order by id")]
    resource = await conn.fetchval("insert into resources (name, channel) values ('news', 'email') returning id")
    links = [Link(f"https://example.com/{n}") for n in range(5)] + [
        Link("https://example.com/pref", {"update-clicked_link": "true", "subscribe-to": str(resource)})
    ]
    message_ids = [(await create_message(conn, "email", f"m{n}", links, resource))[0] for n in range(messages)]
    return profile_ids, message_ids


def make_events(count: int, profile_ids: list[int], message_ids: list[int], rng: random.Random) -> list[Event]:
    ids = EventIds()
    kinds = rng.choices([k for k, _ in MIX], weights=[w for _, w in MIX], k=count)
    now_us = time.time_ns() // 1000
    events = []
    for n, kind in enumerate(kinds):
        ts_us = now_us - (count - n) * 10
        link = rng.randrange(6) if kind == "clicked" else -1
        profile = rng.choice(profile_ids)
        # Each profile from a network of its own, as people are (one shared /24 would be one burst to the verdict).
        events.append(Event(ids.new(ts_us // 1000), kind, "email", rng.choice(message_ids), profile, ts_us, 1, link,
                            "desktop", f"10.{(profile >> 8) & 255}.{profile & 255}.0/24", None))  # fmt: skip
    # 1% retried writes: the same event again, later in the streams.
    events.extend(rng.sample(events, count // 100))
    return events


async def push(redis: Redis, prefix: str, shards: int, events: list[Event], per_entry: int) -> None:
    by_shard: dict[int, list[bytes]] = {}
    for event in events:
        by_shard.setdefault(shard_for(event.profile_id, shards), []).append(encode_event(event))
    pipe = redis.pipeline(transaction=False)
    for shard, payloads in by_shard.items():
        for start in range(0, len(payloads), per_entry):
            pipe.xadd(event_stream(prefix, shard), {ENTRY_FIELD: encode_batch(payloads[start : start + per_entry])})
    await pipe.execute()


async def raw_copy(conn: asyncpg.Connection, events: list[Event]) -> float:
    """Rows/s of one COPY of the distinct events into a bytea-keyed table: what Postgres takes at best."""
    distinct = {event.id: event for event in events}.values()
    records = [(e.id, moment(e.ts_us), e.kind, e.channel, e.message_id, e.profile_id, e.link_version, e.link_index,
                e.ua_class, e.ip_prefix, None, e.signals, e.ua_family, "unknown", []) for e in distinct]  # fmt: skip
    await conn.execute("truncate bench_raw_copy")
    started = time.perf_counter()
    await conn.copy_records_to_table("bench_raw_copy", records=records, columns=RAW_COLUMNS)
    return len(records) / (time.perf_counter() - started)


class LockWaits:
    """Samples the flushers' sessions: how often an active one waits on another transaction's lock."""

    QUERY = """
    select a.wait_event_type = 'Lock' as waiting, left(regexp_replace(a.query, '\\s+', ' ', 'g'), 60) as statement
    from pg_stat_activity a
    where a.datname = current_database() and a.application_name = 'flusher' and a.state = 'active'
    """

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.active = 0
        self.waiting: collections.Counter[str] = collections.Counter()

    async def sample_until(self, done: asyncio.Event) -> None:
        while not done.is_set():
            for row in await self.conn.fetch(self.QUERY):
                self.active += 1
                if row["waiting"]:
                    self.waiting[row["statement"].strip()] += 1
            await asyncio.sleep(0.05)

    def summary(self) -> str:
        waits = sum(self.waiting.values())
        top = "; ".join(f"{n / self.active:.0%} in {statement!r}" for statement, n in self.waiting.most_common(2))
        return f"lock waits {waits / max(self.active, 1):.0%} of {self.active} active-session samples" + (
            f" ({top})" if top else ""
        )


async def bench(args: argparse.Namespace) -> None:
    name = "trk_bench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(args.admin_url)
    await admin.execute(f'create database "{name}"')
    url = database_url_for(args.admin_url, name)
    redis = Redis.from_url(args.redis_url)
    rates, raw_rates, ratios = [], [], []
    try:
        await migrate(url)
        conn = await asyncpg.connect(url)
        profile_ids, message_ids = await seed(conn, args.profiles, args.messages)
        await conn.execute(RAW_TABLE)
        rng = random.Random(args.seed)
        for round_ in range(1, args.rounds + 1):
            prefix = "bench" + secrets.token_hex(3)
            events = make_events(args.events, profile_ids, message_ids, rng)
            if round_ % 2:
                raw = await raw_copy(conn, events)
            await push(redis, prefix, args.shards, events, args.per_entry)
            settings = Settings.from_env(
                {**os.environ, "REDIS_URL": args.redis_url, "DATABASE_URL": url},
                stream_prefix=prefix,
                stream_shards=args.shards,
                flusher={"consumer": "bench"},
            )
            if args.batch_max_events:
                settings = settings.replace(flusher={"batch_max_events": args.batch_max_events})
            flushers = [Flusher(settings.replace(flusher={"consumer": f"bench{n}"}), burst=True)
                        for n in range(args.flushers)]  # fmt: skip
            waits, done = LockWaits(conn), asyncio.Event()
            sampling = asyncio.create_task(waits.sample_until(done))
            profiler = cProfile.Profile() if args.profile and round_ == args.rounds else None
            started, cpu_started = time.perf_counter(), time.process_time()
            if profiler:
                profiler.enable()
            await asyncio.gather(*(flusher.run() for flusher in flushers))
            elapsed = time.perf_counter() - started
            done.set()
            await sampling
            cpu = time.process_time() - cpu_started
            if profiler:
                profiler.disable()
                profiler.dump_stats(args.profile)
            stats = {key: sum(f.stats[key] for f in flushers) for key in ("events", "stored", "batches")}
            rate = stats["events"] / elapsed
            if not round_ % 2:
                raw = await raw_copy(conn, events)
            await conn.execute("truncate bench_raw_copy")
            rates.append(rate)
            raw_rates.append(raw)
            ratios.append(rate / raw)
            print(f"round {round_}: {stats['events']} events ({stats['stored']} new) in {elapsed:.2f}s:"
                  f" {rate:,.0f} events/s; batches {stats['batches']};"
                  f" flusher process CPU {cpu:.2f}s ({cpu / elapsed:.0%} of a core);"
                  f" raw COPY {raw:,.0f} rows/s, drain {rate / raw:.2f}x of it", flush=True)  # fmt: skip
            steps = sum((f.metrics.steps.seconds for f in flushers), collections.Counter())
            total = sum(steps.values())
            print("  steps: " + ", ".join(f"{name} {seconds / total:.0%}" for name, seconds in steps.items()
                                          if seconds / total >= 0.01), flush=True)  # fmt: skip
            print(f"  {waits.summary()}", flush=True)
            keys = [key async for key in redis.scan_iter(match=f"{prefix}:*")]
            if keys:
                await redis.delete(*keys)
        await conn.close()
        print(f"median {statistics.median(rates):,.0f} events/s over {len(rates)} rounds;"
              f" raw COPY median {statistics.median(raw_rates):,.0f} rows/s;"
              f" drain / raw COPY median {statistics.median(ratios):.2f}x")  # fmt: skip
    finally:
        await redis.aclose()
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--flushers", type=int, default=1, help="flushers on the one database, in this process")
    parser.add_argument("--per-entry", type=int, default=256, help="events per stream entry, as the edge batches")
    parser.add_argument("--batch-max-events", type=int, default=0, help="FLUSHER_BATCH_MAX_EVENTS (0: setting)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", help="write a cProfile of the last round to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop
    except ImportError:
        asyncio.run(bench(args))
    else:
        uvloop.run(bench(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

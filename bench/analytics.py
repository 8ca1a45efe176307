"""Analytics reports at scale, and what the rollups cost the flusher.

    .venv/bin/python -m bench.analytics --admin-url postgresql://postgres@127.0.0.1:5432/postgres \\
        --events 2000000 --messages 1000 --profiles 1000000 --requests 200

Reports: makes a throwaway database (dropped at the end), seeds profiles, lists with subscriptions,
messages with ten links each, and --events events straight into `events` with generate_series
(not through the edge), then the rollups and counters from them with one INSERT ... SELECT each,
as the flusher would have left them. Then times each report endpoint in process (the edge app with
its pool, an httpx client) over random messages, lists and profiles: p50 and p99 per endpoint. The
list reports (cohorts, lifetime) are served from snapshots: timed cold (each list's first request,
computed before answering), warm, and warm while stale snapshots refresh in the background.

Drain: the flusher's drain rate with the rollups and without them, round after round in the same
run (bench.flusher_drain's events and seed), and their ratio (target >= 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import asyncpg
import httpx
from redis.asyncio import Redis

from bench import flusher_drain
from bench._services import database_url_for
from edge.app import create_app
from flusher.sink import PostgresSink
from flusher.worker import Flusher
from tracker.config import Settings
from tracker.contract.schema import migrate
from tracker.domain.analytics import report_snapshots
from tracker.domain.analytics.report_links import report_link
from tracker.domain.api_keys import create_api_key
from tracker.domain.messages import register_message

KINDS = (
    "array['delivered', 'delivered', 'delivered', 'opened', 'opened', 'clicked', 'read', 'sent', 'soft_bounce',"
    " 'unsubscribed']"
)

_SEED_EVENTS = f"""
insert into events (id, ts, kind, channel, message_id, profile_id, link_version, link_index, ua_class, ip_prefix,
                    data, verdict)
select gen_random_uuid(), now() - (random() * interval '28 days'), k, 'email', m, p, 1,
       case when k = 'clicked' then (random() * 9)::int else -1 end, 'desktop', '203.0.113.0/24',
       case when k = 'read' then jsonb_build_object('dwell_s', round((random() * 30)::numeric, 1)) end,
       case when random() < 0.8 then 'human' else 'machine' end
from (select g, ({KINDS})[1 + (random() * 9)::int] as k, $1::bigint + (g % $2) as m,
             1 + (random() * ($3 - 1))::bigint as p
      from generate_series(1, $4) g) s
"""

_SEED_ROLLUPS = [
    "insert into message_counters (message_id, kind, total, uniques, first_at, last_at, human, human_uniques,"
    " machine, machine_uniques) select message_id, kind, count(*), count(distinct profile_id), min(ts), max(ts),"
    " count(*) filter (where verdict = 'human'), count(distinct profile_id) filter (where verdict = 'human'),"
    " count(*) filter (where verdict = 'machine'), count(distinct profile_id) filter (where verdict = 'machine')"
    " from events group by 1, 2",
    "insert into message_profile_stats (message_id, profile_id, kind, first_at, last_at, total, human, machine)"
    " select message_id, profile_id, kind, min(ts), max(ts), count(*), count(*) filter (where verdict = 'human'),"
    " count(*) filter (where verdict = 'machine') from events group by 1, 2, 3",
    "insert into message_hourly select message_id, kind, date_trunc('hour', ts, 'UTC'), verdict, count(*)"
    " from events group by 1, 2, 3, 4",
    "insert into message_link_profiles select distinct message_id, link_version, link_index, profile_id"
    " from events where kind = 'clicked'",
    "insert into message_link_clicks select message_id, link_version, link_index, count(*),"
    " count(distinct profile_id), count(*) filter (where verdict = 'human') from events where kind = 'clicked'"
    " group by 1, 2, 3",
    "insert into message_read_dwell select message_id, least(floor((data->>'dwell_s')::float8), 3600)::int, count(*)"
    " from events where kind = 'read' group by 1, 2",
    "insert into profile_active_days select distinct profile_id, (ts at time zone 'UTC')::date from events"
    " where kind in ('opened', 'read', 'clicked')",
]


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def _content(n: int) -> str:
    links = "".join(f'<p><a href="https://shop.example/{n}/{i}">Link {i}</a></p>' for i in range(10))
    return f"<html><body><h1>Message {n}</h1>{links}</body></html>"


async def seed(conn: asyncpg.Connection, args: argparse.Namespace) -> tuple[list[int], list[int]]:
    started = time.perf_counter()
    await conn.execute("insert into profiles (email) select 'b' || g || '@example.com' from generate_series(1, $1) g",
                       args.profiles)  # fmt: skip
    resources = [await conn.fetchval("insert into resources (name, channel) values ($1, 'email') returning id",
                                     f"list {n}") for n in range(args.lists)]  # fmt: skip
    # Every profile on one list, subscribed some time in the last half year.
    await conn.execute(
        "insert into subscriptions (profile_id, resource_id, status, subscribed_at)"
        " select id, ($1::bigint[])[1 + id % $2], 'subscribed', now() - random() * interval '182 days' from profiles",
        resources, len(resources),
    )  # fmt: skip
    messages = [(await register_message(conn, "email", f"campaign {n}", _content(n), resources[n % len(resources)]))
                .message_id for n in range(args.messages)]  # fmt: skip
    print(f"seeded {args.profiles:,} profiles, {len(resources)} lists, {len(messages)} messages"
          f" in {time.perf_counter() - started:.0f}s", flush=True)  # fmt: skip
    await conn.execute("create table events_bench partition of events default")
    started = time.perf_counter()
    chunk = 1_000_000
    for done in range(0, args.events, chunk):
        await conn.execute(_SEED_EVENTS, messages[0], len(messages), args.profiles, min(chunk, args.events - done))
        print(f"  {min(done + chunk, args.events):,} events", flush=True)
    print(f"seeded {args.events:,} events in {time.perf_counter() - started:.0f}s", flush=True)
    started = time.perf_counter()
    for statement in _SEED_ROLLUPS:
        await conn.execute(statement)
    await conn.execute("vacuum analyze")
    print(f"rollups and counters from them in {time.perf_counter() - started:.0f}s", flush=True)
    return messages, resources


async def _timed(client: httpx.AsyncClient, key: str, path: Callable[[], str], count: int, warmup: int) -> list[float]:
    """Milliseconds of `count` requests after `warmup` untimed ones, sorted."""
    times = []
    for n in range(count + warmup):
        url = path()
        started = time.perf_counter()
        response = await client.get(url, headers={"authorization": f"Bearer {key}"})
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, (url, response.status_code, response.text[:200])
        if n >= warmup:
            times.append(elapsed * 1000)
    return sorted(times)


def _line(name: str, times: list[float], note: str = "") -> None:
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{name:<26} p50 {statistics.median(times):7.1f} ms   p99 {p99:7.1f} ms   ({len(times)} requests{note})",
          flush=True)  # fmt: skip


async def time_reports(settings: Settings, messages: list[int], resources: list[int], args: argparse.Namespace) -> None:
    conn = await asyncpg.connect(settings.database_url)
    key = (await create_api_key(conn, "bench", ["read"]))[0]
    await conn.close()
    rng = random.Random(args.seed)
    app = create_app(settings)
    await app.state.open()
    paths = {
        "report (day)": lambda: f"/api/v1/messages/{rng.choice(messages)}/report",
        "report (hour, 7 days)": lambda: f"/api/v1/messages/{rng.choice(messages)}/report?interval=hour"
        f"&from={time.strftime('%Y-%m-%d', time.gmtime(time.time() - 7 * 86400))}",
        "clicks": lambda: f"/api/v1/messages/{rng.choice(messages)}/clicks",
        "cohorts (week)": lambda: f"/api/v1/reports/cohorts?resource={rng.choice(resources)}&period=week",
        "lifetime": lambda: f"/api/v1/reports/lifetime?resource={rng.choice(resources)}",
        "messages list": lambda: f"/api/v1/messages?after={rng.randrange(len(messages))}&limit=100",
        "profiles opened N": lambda: f"/api/v1/profiles?opened={rng.choice(messages)}&limit=100",
        "profile timeline": lambda: f"/api/v1/profiles/{rng.randrange(1, args.profiles)}/events?limit=50",
        "clickmap page": lambda: _path(report_link(settings, rng.choice(messages), "clickmap").url),
    }  # fmt: skip
    # The list reports are served from snapshots (report_snapshots): cold is each list's first
    # request (computed before answering), warm the rest (one row read), then warm again with every
    # snapshot stale so that refreshes run in the background meanwhile, as under steady traffic.
    snapshotted = {"cohorts (week)": "/api/v1/reports/cohorts?resource={}&period=week",
                   "lifetime": "/api/v1/reports/lifetime?resource={}"}  # fmt: skip
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
            for name, template in snapshotted.items():
                lists = iter(resources)
                first = await _timed(client, key, lambda t=template, i=lists: t.format(next(i)), len(resources), 0)
                _line(f"{name} cold", first, ", one per list")
            for name, path in paths.items():  # the first few requests warm the pool and the caches
                _line(
                    name + (" warm" if name in snapshotted else ""), await _timed(client, key, path, args.requests, 5)
                )
            # Every snapshot stale at once (a maximum age of 0); until every list was refreshed once,
            # so that the refreshes run all along the timed requests.
            snapshots = app.state.report_snapshots = report_snapshots.ReportSnapshots(max_age_s=0.0)
            for name in snapshotted:
                before, times = snapshots.background_refreshes, []
                while snapshots.background_refreshes - before < len(resources) and len(times) < 100_000:
                    times += await _timed(client, key, paths[name], args.requests, 0)
                done = snapshots.background_refreshes - before
                _line(f"{name} refreshing", sorted(times), f", {done} background refreshes meanwhile")
                await snapshots.settled()
    finally:
        await app.state.close()


async def drain_rates(args: argparse.Namespace) -> None:
    """Rounds alternate with and without the rollups (ABBA), each on fresh streams over the same database."""
    name = "trk_bench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(args.admin_url)
    await admin.execute(f'create database "{name}"')
    url = database_url_for(args.admin_url, name)
    redis = Redis.from_url(args.redis_url)
    rates: dict[bool, list[float]] = {True: [], False: []}
    try:
        await migrate(url)
        conn = await asyncpg.connect(url)
        profile_ids, message_ids = await flusher_drain.seed(conn, 100_000, 20)
        await conn.close()
        rng = random.Random(args.seed)
        for round_ in range(args.drain_rounds * 2):
            # without, with, with, without, ...: the database grows round after round, and neither
            # side may always come second.
            with_rollups = round_ % 4 in (1, 2)
            prefix = "bench" + secrets.token_hex(3)
            events = flusher_drain.make_events(args.drain_events, profile_ids, message_ids, rng)
            await flusher_drain.push(redis, prefix, 4, events, 256)
            settings = Settings.from_env(
                {**os.environ, "REDIS_URL": args.redis_url, "DATABASE_URL": url},
                stream_prefix=prefix,
                stream_shards=4,
                flusher={"consumer": "bench"},
            )
            flusher = Flusher(settings, burst=True)
            if not with_rollups:  # the same flusher, its sinks leaving the rollup statements out
                flusher.sinks = [PostgresSink(settings, flusher.judge, with_rollups=False) for _ in flusher.sinks]
                flusher.sink = flusher.sinks[0]
            started = time.perf_counter()
            await flusher.run()
            rate = flusher.stats["events"] / (time.perf_counter() - started)
            rates[with_rollups].append(rate)
            print(f"drain round {round_ + 1} ({'with' if with_rollups else 'without'} rollups): {rate:,.0f} events/s",
                  flush=True)  # fmt: skip
            keys = [key async for key in redis.scan_iter(match=f"{prefix}:*")]
            if keys:
                await redis.delete(*keys)
        plain, rolled = statistics.median(rates[False]), statistics.median(rates[True])
        print(f"drain median: without rollups {plain:,.0f} events/s, with rollups {rolled:,.0f} events/s,"
              f" ratio {rolled / plain:.2f} (target >= 0.90)")  # fmt: skip
    finally:
        await redis.aclose()
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


async def bench(args: argparse.Namespace) -> None:
    if not args.skip_reports:
        name = "trk_bench_" + secrets.token_hex(4)
        admin = await asyncpg.connect(args.admin_url)
        await admin.execute(f'create database "{name}"')
        url = database_url_for(args.admin_url, name)
        try:
            await migrate(url)
            conn = await asyncpg.connect(url)
            messages, resources = await seed(conn, args)
            await conn.close()
            settings = Settings.from_env({**os.environ, "DATABASE_URL": url, "REDIS_URL": args.redis_url,
                                          "TRACKER_SIGNING_KEYS": "1:bench-signing-key-0123456789abcdef"})  # fmt: skip
            await time_reports(settings, messages, resources, args)
        finally:
            await admin.execute(f'drop database if exists "{name}" with (force)')
            await admin.close()
    if not args.skip_drain:
        await drain_rates(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000_000, help="events seeded (the issue's target: 10M)")
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--lists", type=int, default=20, help="resources; every profile is on one of them")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per endpoint")
    parser.add_argument("--drain-events", type=int, default=100_000, help="events per drain round")
    parser.add_argument("--drain-rounds", type=int, default=3, help="rounds with rollups, and as many without")
    parser.add_argument("--skip-reports", action="store_true")
    parser.add_argument("--skip-drain", action="store_true")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    asyncio.run(bench(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

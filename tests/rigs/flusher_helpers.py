"""Helpers for the flusher tests: events pushed the way the edge writes them, data to act on, runs."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

from flusher.worker import Flusher
from tracker.config import Settings
from tracker.contract.events import Event, EventIds, encode_batch, encode_event
from tracker.contract.keys import ENTRY_FIELD, event_stream, shard_for
from tracker.domain.link_tables import Link, create_message
from tracker.ops.embedded import EmbeddedRedis

_ids = EventIds()
_emails = itertools.count()
_tag = os.urandom(3).hex()


def now_us() -> int:
    return time.time_ns() // 1000


def event(message_id: int, profile_id: int, kind: str = "opened", *, ts_us: int | None = None,
          channel: str = "email", link_index: int = -1, link_version: int = 1,
          data: dict[str, Any] | None = None, ua_class: str = "desktop", ip_prefix: str | None = None,
          signals: int = 0) -> Event:  # fmt: skip
    """A person's event by default: a desktop browser, from a network of the profile's own (no burst)."""
    ts_us = now_us() if ts_us is None else ts_us
    if ip_prefix is None:
        ip_prefix = f"10.{(profile_id >> 8) & 255}.{profile_id & 255}.0/24"
    return Event(_ids.new(ts_us // 1000), kind, channel, message_id, profile_id, ts_us, link_version,
                 link_index, ua_class, ip_prefix, data, signals)  # fmt: skip


async def push(redis: Redis, settings: Settings, events: Iterable[Event], per_entry: int = 100) -> int:
    """XADD the events as the edge does: per shard, `per_entry` events to an entry."""
    by_shard: dict[int, list[bytes]] = {}
    for e in events:
        by_shard.setdefault(shard_for(e.profile_id, settings.stream_shards), []).append(encode_event(e))
    pushed = 0
    pipe = redis.pipeline(transaction=False)
    for shard, payloads in by_shard.items():
        stream = event_stream(settings.stream_prefix, shard)
        for start in range(0, len(payloads), per_entry):
            pipe.xadd(stream, {ENTRY_FIELD: encode_batch(payloads[start : start + per_entry])})
            pushed += 1
            if pushed % 200 == 0:
                await pipe.execute()
    await pipe.execute()
    return sum(len(p) for p in by_shard.values())


async def push_raw(redis: Redis, settings: Settings, fields: dict, shard: int = 0) -> bytes:
    return await redis.xadd(event_stream(settings.stream_prefix, shard), fields)


async def make_profiles(pg: asyncpg.Connection, count: int, **columns: Any) -> list[int]:
    rows = []
    for _ in range(count):
        n = next(_emails)
        rows.append(await pg.fetchval(
            "insert into profiles (email, phone) values ($1, $2) returning id",
            f"p{_tag}-{n}@example.com", f"+1555{_tag}{n:06d}",
        ))  # fmt: skip
    if columns:
        sets = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(columns))
        await pg.execute(f"update profiles set {sets} where id = any($1)", rows, *columns.values())
    return rows


async def make_resource(pg: asyncpg.Connection, channel: str = "email") -> int:
    return await pg.fetchval("insert into resources (name, channel) values ('list', $1) returning id", channel)


async def make_message(pg: asyncpg.Connection, channel: str = "email", links: list[Link] | None = None,
                       resource_id: int | None = None) -> int:  # fmt: skip
    message_id, _version = await create_message(
        pg, channel, "test", links if links is not None else [Link("https://example.com/")], resource_id
    )
    return message_id


async def ensure_field(pg: asyncpg.Connection, name: str, type_: str, enum_values: list[str] | None = None) -> None:
    await pg.execute(
        "insert into profile_fields (name, type, enum_values) values ($1, $2, $3) on conflict (name) do nothing",
        name, type_, enum_values,
    )  # fmt: skip


def flusher_settings(settings: Settings, **flusher: Any) -> Settings:
    """`settings` with quick retries and batches, and `flusher` changes to its flusher part."""
    quick = {"retry_min_s": 0.05, "retry_max_s": 0.5, "batch_max_age_ms": 20.0}
    return settings.replace(flusher={**quick, **flusher})


async def drain(settings: Settings, **flusher: Any) -> Flusher:
    """Run one flusher in burst mode (in this process) until the streams are drained."""
    flusher = Flusher(flusher_settings(settings, **flusher), burst=True)
    await flusher.run()
    return flusher


def flusher_env(settings: Settings, **variables: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FLUSHER_", "TRACKER_"))}
    env.update(
        REDIS_URL=settings.redis_url,
        DATABASE_URL=settings.database_url,
        TRACKER_STREAM_PREFIX=settings.stream_prefix,
        TRACKER_STREAM_SHARDS=str(settings.stream_shards),
        FLUSHER_RETRY_MIN_S="0.05",
        FLUSHER_RETRY_MAX_S="0.5",
        FLUSHER_MIGRATE="false",
        FLUSHER_SETTLE_S="0",  # clicks act at once unless a test says otherwise
        TRACKER_VERDICT_TOO_FAST_S="0",  # test events come right after their deliveries
    )
    env.update(variables)
    return env


FLUSHER_COMMAND = [sys.executable, "-m", "flusher.cli"]


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    for _ in itertools.count():
        if await condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def counters(pg: asyncpg.Connection, message_id: int) -> dict[str, tuple[int, int]]:
    rows = await pg.fetch("select kind, total, uniques from message_counters where message_id = $1", message_id)
    return {row["kind"]: (row["total"], row["uniques"]) for row in rows}


async def stored_ids(pg: asyncpg.Connection, message_ids: list[int]) -> list[bytes]:
    rows = await pg.fetch("select id from events where message_id = any($1)", message_ids)
    return [row["id"].bytes for row in rows]


# -- a mixed workload and its outcome, recomputed the plain way --------------------------------

WORKLOAD_KINDS = ["opened"] * 30 + ["delivered"] * 30 + ["clicked"] * 25 + ["unsubscribed"] * 4 + \
    ["confirmed"] * 4 + ["soft_bounce"] * 4 + ["hard_bounce"] * 1 + ["complained"] * 1 + ["read"] * 1


class Workload:
    """Messages, profiles and events whose effects are known in advance."""

    def __init__(self, profiles: list[int], messages: list[int], list_resource: int, link_resource: int) -> None:
        self.profiles = profiles
        self.messages = messages
        self.list_resource = list_resource  # every message's resource: unsubscribed/confirmed act on it
        self.link_resource = link_resource  # link 2's subscribe-to
        self.events: list[Event] = []

    @classmethod
    async def create(cls, pg: asyncpg.Connection, profiles: int = 300, messages: int = 3) -> Workload:
        await ensure_field(pg, "tier", "enum", ["gold", "silver"])
        list_resource = await make_resource(pg)
        link_resource = await make_resource(pg)
        links = [Link("https://example.com/plain"), Link("https://example.com/g", {"update-tier": "gold"}),
                 Link("https://example.com/s", {"update-tier": "silver", "subscribe-to": str(link_resource)})]
        message_ids = [await make_message(pg, links=links, resource_id=list_resource) for _ in range(messages)]
        return cls(await make_profiles(pg, profiles), message_ids, list_resource, link_resource)

    def generate(self, count: int, rng: Any, duplicates: float = 0.02) -> list[Event]:
        """`count` distinct events (strictly increasing times), then re-sends of some of them."""
        t0 = now_us() - count * 10 - 60_000_000
        ghost = max(self.profiles) + 10_000_000  # a profile that does not exist
        distinct = []
        for n in range(count):
            kind = rng.choice(WORKLOAD_KINDS)
            who = rng.random()
            profile = 0 if who < 0.01 else ghost if who < 0.02 else rng.choice(self.profiles)
            link = rng.randrange(3) if kind == "clicked" else -1
            # No source network: this workload's clicks come 10 us apart, which the burst rule would
            # rightly call a machine's (tests/flusher/test_verdicts.py covers the verdict; this, exactly once).
            distinct.append(event(rng.choice(self.messages), profile, kind, ts_us=t0 + n * 10, link_index=link,
                                  ip_prefix=""))
        self.events = distinct
        resent = rng.sample(distinct, int(count * duplicates))
        mixed = distinct + resent
        rng.shuffle(mixed)  # arrival order is not time order
        return mixed

    def expected(self, soft_bounce_limit: int) -> dict[str, Any]:
        known = set(self.profiles)
        counters: dict[tuple[int, str], list] = {}
        stats: dict[tuple[int, int, str], list] = {}
        complained, hard, softs = set(), set(), {}
        tier: dict[int, tuple[int, str]] = {}
        subs: dict[tuple[int, int], tuple[int, str]] = {}
        for e in sorted(self.events, key=lambda e: e.ts_us):
            counter = counters.setdefault((e.message_id, e.kind), [0, set()])
            counter[0] += 1
            if e.profile_id not in known:
                continue
            counter[1].add(e.profile_id)
            stat = stats.setdefault((e.message_id, e.profile_id, e.kind), [0, e.ts_us, e.ts_us])
            stat[0] += 1
            stat[2] = e.ts_us
            p = e.profile_id
            if e.kind == "complained":
                complained.add(p)
            elif e.kind == "hard_bounce":
                hard.add(p)
            elif e.kind == "soft_bounce":
                softs[p] = softs.get(p, 0) + 1  # all within the window
            elif e.kind in ("unsubscribed", "confirmed"):
                subs[(p, self.list_resource)] = (e.ts_us, "unsubscribed" if e.kind == "unsubscribed" else "subscribed")
            elif e.kind == "clicked" and e.link_index in (1, 2):
                tier[p] = (e.ts_us, "gold" if e.link_index == 1 else "silver")
                if e.link_index == 2:
                    subs[(p, self.link_resource)] = (e.ts_us, "subscribed")
        hard |= {p for p, n in softs.items() if n >= soft_bounce_limit}
        return {
            "counters": {key: (total, len(uniques)) for key, (total, uniques) in counters.items()},
            "stats": {key: tuple(value) for key, value in stats.items()},
            "email": {p: "complained" if p in complained else "hard_bounced" if p in hard else "active"
                      for p in self.profiles},
            "fields": {p: {"tier": tier[p][1]} if p in tier else {} for p in self.profiles},
            "subscriptions": {key: status for key, (_ts, status) in subs.items()},
        }  # fmt: skip

    async def actual(self, pg: asyncpg.Connection) -> dict[str, Any]:
        rows = await pg.fetch(
            "select message_id, kind, total, uniques from message_counters where message_id = any($1)", self.messages
        )
        counters = {(r["message_id"], r["kind"]): (r["total"], r["uniques"]) for r in rows}
        rows = await pg.fetch(
            "select message_id, profile_id, kind, total,"
            " (extract(epoch from first_at) * 1000000)::bigint as first_us,"
            " (extract(epoch from last_at) * 1000000)::bigint as last_us"
            " from message_profile_stats where message_id = any($1)",
            self.messages,
        )
        stats = {(r["message_id"], r["profile_id"], r["kind"]): (r["total"], r["first_us"], r["last_us"]) for r in rows}
        rows = await pg.fetch("select id, email_status, fields::text from profiles where id = any($1)", self.profiles)
        email = {r["id"]: r["email_status"] for r in rows}
        fields = {r["id"]: json.loads(r["fields"]) for r in rows}
        rows = await pg.fetch(
            "select profile_id, resource_id, status from subscriptions where profile_id = any($1)", self.profiles
        )
        subs = {(r["profile_id"], r["resource_id"]): r["status"] for r in rows}
        return {"counters": counters, "stats": stats, "email": email, "fields": fields, "subscriptions": subs}

    async def check(self, pg: asyncpg.Connection, soft_bounce_limit: int = 3) -> None:
        stored = await pg.fetch(
            "select id, count(*) as n from events where message_id = any($1) group by id", self.messages
        )
        assert all(row["n"] == 1 for row in stored), "an event id was stored twice"
        assert {row["id"].bytes for row in stored} == {e.id for e in self.events}
        expected, actual = self.expected(soft_bounce_limit), await self.actual(pg)
        for part in expected:
            assert actual[part] == expected[part], f"{part} differ"


# -- a flusher as a process, and the database as an administrator sees it -----------------------


def start_flusher(settings: Settings, *args: str, **variables: str) -> subprocess.Popen:
    """`flusher` in a process of its own; its log goes to a file (a pipe nobody reads could fill and block it)."""
    log = tempfile.TemporaryFile()
    process = subprocess.Popen([*FLUSHER_COMMAND, *args], env=flusher_env(settings, **variables),
                               stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    process.log = log  # type: ignore[attr-defined]
    return process


def log_of(process: subprocess.Popen) -> str:
    process.log.seek(0)  # type: ignore[attr-defined]
    return process.log.read().decode(errors="replace")  # type: ignore[attr-defined]


async def wait_exit(process: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError(f"still running after {timeout}s; its log ends:\n{log_of(process)[-3000:]}")
        await asyncio.sleep(0.02)
    return process.returncode


def check(settings: Settings, consumer: str, command: list[str] = FLUSHER_COMMAND) -> int:
    """`flusher --check` (or another program's) for `consumer`: its exit code."""
    return subprocess.run([*command, "--check", "--consumer", consumer], env=flusher_env(settings),
                          capture_output=True, timeout=30).returncode  # fmt: skip


END_SESSIONS = ("select pg_terminate_backend(pid) from pg_stat_activity"
                " where datname = '{name}' and pid <> pg_backend_pid()")  # fmt: skip


async def admin(database_url: str, *statements: str) -> None:
    """Run statements as an administrator, from another database than `database_url`'s ({db}, {name}: its name)."""
    # The database is the URL's path: an embedded server's socket folder is in its query (?host=/tmp/...).
    name = urlsplit(database_url).path.lstrip("/")
    conn = await asyncpg.connect(urlunsplit(urlsplit(database_url)._replace(path="/postgres")))
    try:
        for statement in statements:
            await conn.execute(statement.replace("{db}", f'"{name}"').replace("{name}", name))
    finally:
        await conn.close()


# -- a Redis at maxmemory ---------------------------------------------------------------------------


@asynccontextmanager
async def redis_to_fill(tmp_path: Path, port: int) -> AsyncIterator[Redis]:
    """A redis-server of its own (noeviction, no persistence), to be filled with `fill`."""
    server = EmbeddedRedis(tmp_path / "redis", port=port, persist=False,
                           extra_args=("--maxmemory-policy", "noeviction"))  # fmt: skip
    server.start()
    client = Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()
        server.stop()


async def fill(client: Redis, headroom: int = 1024) -> None:
    """Many small keys (a big one leaves a query buffer counted, then freed), then maxmemory just above
    (a negative `headroom`: below, so that Redis stays full whatever it frees); checks that a write is refused."""
    async with client.pipeline(transaction=False) as pipe:
        for number in range(400):
            pipe.set(f"filler:{number}", b"x" * (8 << 10))
        await pipe.execute()
    await asyncio.sleep(0.2)
    used = (await client.info("memory"))["used_memory"]
    await client.config_set("maxmemory", used + headroom)
    try:
        for number in range(64):
            await client.set(f"more:{number}", b"x" * (8 << 10))
    except OutOfMemoryError:
        return
    raise AssertionError("Redis took every write: not full")


def url_of(client: Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"

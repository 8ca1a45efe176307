"""`tracker doctor`: the live Redis and Postgres settings this system's guarantees depend on, checked.

Redis holds every event the flusher has not committed yet, so it must persist
(append-only file, fsync every second or always) and must never evict
(`maxmemory-policy noeviction`); a `maxmemory` with headroom lets the edge
spool before Redis refuses writes. Postgres must be migrated, writable and
durable (`fsync` on). Each finding says what is wrong and what to set.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict, dataclass

from tracker.config import Settings, redact_url
from tracker.contract.exits import EXIT_FAILED, EXIT_OK

OK, WARN, FAIL = "ok", "warn", "FAIL"
_HEADROOM = 0.8  # used/maxmemory above this: the edge will soon spool instead of writing to Redis


@dataclass
class Finding:
    service: str
    check: str
    level: str
    detail: str


async def check_redis(url: str, cluster: bool = False) -> list[Finding]:
    """The checks below on the one Redis; on a cluster, its state and nodes first, then each master's."""
    if cluster:
        return await check_cluster(url)
    return await _check_node(url)


async def check_cluster(url: str) -> list[Finding]:
    """Slots served, each master's slots and replicas with their replication lag, then each master's checks."""
    from tracker.streams.cluster import SLOTS, on_masters, open_cluster

    found: list[Finding] = []

    def add(check: str, level: str, detail: str) -> None:
        found.append(Finding("redis", check, level, detail))

    client = open_cluster(url, socket_timeout=5, socket_connect_timeout=5, decode_responses=True)
    try:
        try:
            info = await client.cluster_info()
            nodes = await client.cluster_nodes()
            replication = await on_masters(client, "INFO", "replication")
        except Exception as exc:
            add("cluster", FAIL, f"{redact_url(url)}: {type(exc).__name__}: {exc}")
            return found
        served = int(info.get("cluster_slots_ok", 0))
        state = info.get("cluster_state")
        add("cluster", OK if state == "ok" and served == SLOTS else FAIL,
            f"state {state}, {served} of {SLOTS} slots served, {info.get('cluster_size')} masters,"
            f" {info.get('cluster_known_nodes')} nodes")  # fmt: skip
        masters = sorted(name for name, facts in nodes.items() if "master" in facts["flags"] and facts["slots"])
        for name in masters:
            facts = nodes[name]
            slots = ", ".join("-".join(dict.fromkeys(pair)) for pair in facts["slots"])
            add(f"node {name}", *_replicas(replication.get(name), slots))
        urls = [f"{url.split('://', 1)[0]}://{name}" for name in masters]
    finally:
        await client.aclose()
    for node_url in urls:
        for finding in await _check_node(node_url):
            finding.check = f"{finding.check} ({node_url.split('://', 1)[1]})"
            found.append(finding)
    return found


def _replicas(info: object, slots: str) -> tuple[str, str]:
    """(level, detail) of one master: its slots, and each replica's state and lag (bytes behind, seconds)."""
    if not isinstance(info, dict):
        return FAIL, f"slots {slots}; INFO replication failed: {info}"
    offset = int(info.get("master_repl_offset", 0))
    replicas = [value for key, value in info.items() if key.startswith("slave") and isinstance(value, dict)]
    shown = [f"replica {r.get('ip')}:{r.get('port')} {r.get('state')}, lag {offset - int(r.get('offset', 0))} bytes"
             f" / {r.get('lag')} s" for r in replicas]  # fmt: skip
    online = [r for r in replicas if r.get("state") == "online"]
    if not online:
        return WARN, f"slots {slots}; no online replica: a failure of this master loses its slots' entries"
    return OK, f"slots {slots}; " + "; ".join(shown)


async def _check_node(url: str) -> list[Finding]:
    from redis.asyncio import Redis

    found: list[Finding] = []

    def add(check: str, level: str, detail: str) -> None:
        found.append(Finding("redis", check, level, detail))

    client = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, decode_responses=True)
    try:
        try:
            info = await client.info()
        except Exception as exc:
            add("reachable", FAIL, f"{redact_url(url)}: {type(exc).__name__}: {exc}")
            return found
        add("reachable", OK, f"Redis {info.get('redis_version')} at {redact_url(url)}")
        major_minor = tuple(int(part) for part in str(info.get("redis_version", "0.0")).split(".")[:2])
        if major_minor < (6, 2):
            add("version", FAIL, "6.2 or newer is needed (XAUTOCLAIM); 7 or newer shows consumer-group lag")
        if info.get("aof_enabled") in (1, "1"):
            fsync = await _config(client, "appendfsync")
            if fsync in ("everysec", "always", None):
                add("persistence", OK, f"append-only file on, appendfsync {fsync or 'unknown'}")
            else:
                add("persistence", WARN, f"appendfsync {fsync}: a machine crash loses what the OS had not written;"
                    " set appendfsync everysec")  # fmt: skip
        else:
            add("persistence", FAIL, "appendonly no: a Redis restart loses every event not yet in Postgres;"
                " set appendonly yes and appendfsync everysec")  # fmt: skip
        policy = info.get("maxmemory_policy") or await _config(client, "maxmemory-policy")
        if policy == "noeviction":
            add("eviction", OK, "maxmemory-policy noeviction")
        else:
            add("eviction", FAIL, f"maxmemory-policy {policy}: Redis may evict stream entries (lost events);"
                " set maxmemory-policy noeviction")  # fmt: skip
        used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0) or 0)
        if not limit:
            add("memory", WARN, f"maxmemory 0 (no limit; {used / 2**20:.1f} MiB used): set it below the machine's"
                " memory so that Redis refuses writes (and the edge spools) before the kernel kills it")  # fmt: skip
        elif used > limit * _HEADROOM:
            add("memory", WARN, f"{used / 2**20:.1f} of {limit / 2**20:.1f} MiB used: the edge spools near the limit;"
                " is a flusher behind?")  # fmt: skip
        else:
            add("memory", OK, f"{used / 2**20:.1f} of {limit / 2**20:.1f} MiB used")
    finally:
        await client.aclose()
    return found


async def _config(client, name: str) -> str | None:
    try:
        return (await client.config_get(name)).get(name)
    except Exception:  # CONFIG is often disabled on managed Redis: INFO has to do
        return None


async def check_postgres(url: str) -> list[Finding]:
    import asyncpg

    from tracker.contract.schema import available

    found: list[Finding] = []

    def add(check: str, level: str, detail: str) -> None:
        found.append(Finding("postgres", check, level, detail))

    try:
        conn = await asyncpg.connect(url, timeout=5)
    except Exception as exc:
        add("reachable", FAIL, f"{redact_url(url)}: {type(exc).__name__}: {exc}")
        return found
    try:
        add("reachable", OK, f"{(await conn.fetchval('show server_version')).split()[0]} at {redact_url(url)}")
        wanted = {number for number, _name, _sql in available()}
        exists = await conn.fetchval("select to_regclass('schema_migrations') is not null")
        done = {r[0] for r in await conn.fetch("select version from schema_migrations")} if exists else set()
        missing = sorted(wanted - done)
        if missing:
            add("schema", FAIL, f"migrations {missing} not applied: run `tracker migrate` (or start a flusher)")
        else:
            add("schema", OK, f"{len(done)} migrations applied")
        if await conn.fetchval("show transaction_read_only") == "on":
            add("writable", FAIL, "sessions are read-only (a standby, or default_transaction_read_only on)")
        else:
            add("writable", OK, "sessions can write")
        if await conn.fetchval("show fsync") != "on":
            add("durability", FAIL, "fsync off: a crash can corrupt the database; set fsync on")
        else:
            add("durability", OK, f"fsync on, synchronous_commit {await conn.fetchval('show synchronous_commit')}")
    finally:
        await conn.close()
    return found


async def diagnose(settings: Settings) -> list[Finding]:
    findings: list[Finding] = []
    if settings.redis_url:
        findings += await check_redis(settings.redis_url, cluster=settings.redis_cluster)
    else:
        findings.append(Finding("redis", "configured", FAIL, "REDIS_URL is not set"))
    if settings.database_url:
        findings += await check_postgres(settings.database_url)
    else:
        findings.append(Finding("postgres", "configured", FAIL, "DATABASE_URL is not set"))
    if not settings.signing_keys:
        findings.append(Finding("settings", "signing keys", WARN, "TRACKER_SIGNING_KEYS is not set: the edge"
                                " refuses to start and tokens cannot be minted"))  # fmt: skip
    return findings


def run(settings: Settings, as_json: bool = False) -> int:
    findings = asyncio.run(diagnose(settings))
    if as_json:
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        width = max(len(f"{f.service} {f.check}") for f in findings)
        for f in findings:
            print(f"{f.level:<4}  {f.service + ' ' + f.check:<{width}}  {f.detail}")
        failed = sum(f.level == FAIL for f in findings)
        warned = sum(f.level == WARN for f in findings)
        print(f"\n{failed} failed, {warned} warnings", file=sys.stderr)
    return EXIT_FAILED if any(f.level == FAIL for f in findings) else EXIT_OK

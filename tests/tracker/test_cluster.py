"""Redis Cluster: the whole stack on 3 masters and 3 replicas, exactly once end to end, and a master killed.

One cluster for the module (bench.local_cluster.LocalCluster); each test has its
own key prefix and database. The failover figures (answered, stored, lost,
duplicated, time to recover) are printed: `pytest -s tests/tracker/test_cluster.py`.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bench.local_cluster import LocalCluster, Node, cluster_binary, cluster_port
from tests.conftest import fresh_database
from tests.rigs.cluster_rig import ClusterStack
from tests.rigs.fault_rig import BIN, Outcome, free_port, wait_for
from tests.rigs.hook_helpers import LOOPBACK_ALLOWED, SECRET, SECRET_KEYS, http_receiver
from tracker.config import Settings, SettingsError
from tracker.contract.keys import event_stream, flusher_metrics_key, forwarder_metrics_key, forwarders_set_key
from tracker.ops.doctor import check_redis
from tracker.streams.cluster import ClusterRefused, open_cluster, slot_of

BINARY, WHY = cluster_binary()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(BINARY is None, reason=WHY)]
SHARDS = 6


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    assert BINARY is not None
    local = LocalCluster(Path(tempfile.mkdtemp(prefix="trk-cluster-")), BINARY)
    try:
        local.start()
        yield local
    finally:
        local.stop()


@pytest.fixture
async def stack(cluster: LocalCluster, pg_admin_url: str, tmp_path: Path) -> AsyncIterator[ClusterStack]:
    cluster.wait_ok()  # a failover test before may have left a node restarting
    async with fresh_database(pg_admin_url) as database_url:
        rig = ClusterStack(tmp_path, database_url, prefix=f"c{time.monotonic_ns() % 10**8}", cluster=cluster,
                           env_extra={"TRACKER_STREAM_SHARDS": str(SHARDS), "FLUSHER_BATCH_MAX_AGE_MS": "50"})
        await rig.prepare()
        try:
            yield rig
        finally:
            await rig.close()


def count(outcome: Outcome) -> str:
    return (f"answered {outcome.hits}, stored {outcome.rows}, dropped {outcome.dropped}, lost {outcome.lost}, "
            f"duplicated {outcome.duplicated}")  # fmt: skip


async def test_the_whole_stack_stores_and_forwards_every_hit_once(stack: ClusterStack, cluster: LocalCluster) -> None:
    from tests.rigs.api_helpers import running_api

    masters = {cluster.master_of(event_stream(stack.prefix, shard)) for shard in range(SHARDS)}
    assert len(masters) >= 2, "the shards' hash tags all fell on one master"
    settings = Settings.from_env(stack.env(TRACKER_HOOKS_SECRET_KEYS=SECRET_KEYS,
                                           TRACKER_HOOKS_ALLOWED_DESTINATIONS=",".join(LOOPBACK_ALLOWED)))
    with http_receiver() as receiver:
        # The API (API-key cache, hook groups on every committed shard, the hooks' count) on the cluster.
        async with running_api(settings) as api:
            hook = {"name": "crm", "destination": {"type": "http", "url": receiver.url, "secret": SECRET,
                                                   "timeout_s": 2.0, "max_events": 50}}  # fmt: skip
            await api.call("POST", "/hooks", json=hook)
        await stack.start_edges(2, workers=2)
        for n in range(3):
            stack.start_flusher(f"flusher-{n}")
        stack.start_forwarder(TRACKER_HOOKS_SECRET_KEYS=SECRET_KEYS, TRACKER_HOOKS_RELOAD_S="0.2",
                              TRACKER_HOOKS_ALLOWED_DESTINATIONS=",".join(LOOPBACK_ALLOWED))
        outcome = Outcome("cluster, whole stack", hits=await stack.load(seconds=3, rate=800))
        await stack.settle(outcome, stack.cleared(), timeout=60)
        await wait_for(lambda: _delivered(receiver, outcome.hits), 60, "every stored event forwarded")
        print("\n" + count(outcome))
        assert outcome.hits > 0 and outcome.lost == 0 and outcome.duplicated == 0, count(outcome)
        ids = Counter(event["id"] for event in receiver.events())
        assert len(ids) == outcome.hits and max(ids.values()) == 1, "forwarded other than once each"


async def test_snapshot_keys_of_every_process_share_one_slot(cluster: LocalCluster) -> None:
    """/metrics and `tracker stats` MGET every flusher's (and hooks worker's) snapshot in one command."""
    client = open_cluster(cluster.url, socket_timeout=5)
    try:
        keys = [flusher_metrics_key("slots", f"flusher-{n}") for n in range(5)]
        for key in keys:
            await client.set(key, b"{}", ex=30)
        assert await client.mget(keys) == [b"{}"] * 5
        hooks = [forwarder_metrics_key("slots", f"w{n}") for n in range(5)] + [forwarders_set_key("slots")]
        assert len({slot_of(key) for key in hooks}) == 1
    finally:
        await client.aclose()


async def _stored_at_least(stack: ClusterStack, count: int) -> bool:
    return (await stack.rows())[0] >= count


async def _delivered(receiver, hits: int) -> bool:
    return len({event["id"] for event in receiver.events()}) >= hits


@pytest.mark.parametrize("wait_replicas", [0, 1])
async def test_a_master_killed_under_load_loses_and_doubles_nothing(stack: ClusterStack, cluster: LocalCluster,
                                                                     wait_replicas: int) -> None:  # fmt: skip
    stack.env_extra["TRACKER_REDIS_WAIT_REPLICAS"] = str(wait_replicas)
    await stack.start_edges(2, workers=2)
    for n in range(3):
        stack.start_flusher(f"flusher-{n}")
    victim = cluster.master_of(event_stream(stack.prefix, 0))
    load = asyncio.create_task(stack.load(seconds=8, rate=500))
    await wait_for(lambda: _stored_at_least(stack, 300), 30, "the load to reach Postgres before the kill")
    killed_at = time.monotonic()
    cluster.kill(victim)
    survivor = next(node for node in cluster.nodes if node.process is not None)
    await wait_for(lambda: _promoted(cluster, survivor, victim), 30, "a replica promoted")
    promoted_s = time.monotonic() - killed_at
    resumed = stack.cleared()
    cluster.restart(victim)  # back as a replica of the promoted one (WAIT needs one)
    outcome = Outcome(f"master killed, WAIT {wait_replicas}", hits=await load)
    await stack.settle(outcome, resumed, timeout=90)
    recovered_s = time.monotonic() - killed_at
    print(f"\n{outcome.scenario}: {count(outcome)}; replica promoted after {promoted_s:.1f} s, first row after "
          f"the promotion {outcome.resumed_s} s later, caught up {recovered_s:.1f} s after the kill")  # fmt: skip
    assert outcome.hits > 0, "no hit answered"
    assert outcome.duplicated == 0, count(outcome)
    assert outcome.lost == 0, count(outcome)


async def test_commands_on_connections_closed_under_them_answer_or_fail_as_an_outage(cluster: LocalCluster) -> None:
    """redis-py closes the client's connections when it re-reads the slot map (one command met the dead master);
    commands in flight on them must answer or fail as an outage, which the programs wait out, never with the
    RuntimeError or AttributeError a closed transport gave before redis-py 8 (three flushers exited on those).
    redis-py 8 raises its own ConnectionError there: 0 of 12,000 commands failed in 400 closes here, so the
    close is a check that nothing else comes out, and the translation is checked by the test below."""
    client = open_cluster(cluster.url, socket_timeout=5)
    outcomes: Counter[str] = Counter()
    try:
        await client.set("{closed}k", b"v")
        for round_ in range(40):
            reads = [asyncio.create_task(client.get("{closed}k")) for _ in range(30)]
            for _ in range(round_ % 8):  # the close lands at different points of the commands
                await asyncio.sleep(0)
            await client.aclose()
            for outcome in await asyncio.gather(*reads, return_exceptions=True):
                outcomes[type(outcome).__name__] += 1
        assert await client.get("{closed}k") == b"v"  # and the client goes on
    finally:
        await client.aclose()
    assert sum(outcomes.values()) == 1200
    assert set(outcomes) <= {"bytes", "ClusterUnavailable", "ConnectionError"}, outcomes


def _raised_in(filename: str, error: BaseException) -> BaseException:
    """`error` as raised by code in `filename` (where the closed-connection rule looks for the innermost frame)."""
    try:
        exec(compile("raise error", filename, "exec"), {"error": type(error)(*error.args)})  # a fresh traceback
    except BaseException as raised:
        return raised
    raise AssertionError("not raised")


@pytest.mark.parametrize("where", ["/site-packages/redis/asyncio/connection.py",
                                   "/usr/lib/python3.11/asyncio/streams.py", "uvloop/handles/handle.pyx"])  # fmt: skip
@pytest.mark.parametrize("error", [RuntimeError("unable to perform operation on <TCPTransport closed=True>; the "
                                                "handler is closed"),
                                   AttributeError("'NoneType' object has no attribute 'writelines'")])  # fmt: skip
def test_a_closed_connections_error_in_the_clients_code_is_an_outage(where: str, error: Exception) -> None:
    from tracker.streams.cluster import ClusterUnavailable, _unavailable

    assert isinstance(_unavailable(_raised_in(where, error)), ClusterUnavailable)
    assert _unavailable(_raised_in("/srv/app/flusher/worker.py", error)) is None  # the caller's own: a bug
    assert _unavailable(_raised_in(where, RuntimeError("something else"))) is None


async def _promoted(cluster: LocalCluster, survivor: Node, victim: int) -> bool:
    return cluster.state_ok(survivor) and victim not in cluster.master_ports()


async def test_a_single_redis_is_refused_in_cluster_mode_with_one_line(tmp_path: Path) -> None:
    assert BINARY is not None
    port = free_port()
    single = subprocess.Popen([BINARY, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                               "--save", ""], stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        LocalCluster._until(lambda: LocalCluster._try(Node(port, tmp_path), "PING"), 20, "redis-server")
        client = open_cluster(f"redis://127.0.0.1:{port}", socket_timeout=2)
        with pytest.raises(ClusterRefused, match="is a single Redis, not a cluster node"):
            await client.ping()
        await client.aclose()
    finally:
        single.kill()
        single.wait()


def test_a_unix_socket_is_refused_in_cluster_mode_naming_the_setting() -> None:
    with pytest.raises(ClusterRefused, match=r"REDIS_URL is a Unix socket \(/run/redis.sock\)"):
        open_cluster("unix:///run/redis.sock")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:7000/12", "redis://127.0.0.1:7000?db=3",
                                 "redis://127.0.0.1:7000/0,127.0.0.1:7001/5"])  # fmt: skip
def test_a_database_other_than_0_is_refused_in_cluster_mode_naming_the_setting(url: str) -> None:
    with pytest.raises(ClusterRefused, match=r"REDIS_URL names database .* has database 0 only"):
        open_cluster(url)
    with pytest.raises(SettingsError, match="REDIS_URL names database"):
        Settings.from_env({"REDIS_URL": url, "TRACKER_REDIS_CLUSTER": "1"})
    done = subprocess.run([str(BIN / "flusher"), "--check"], env={"REDIS_URL": url, "TRACKER_REDIS_CLUSTER": "1",
                          "PATH": str(BIN)}, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert Settings.from_env({"REDIS_URL": "redis://127.0.0.1:7000/0", "TRACKER_REDIS_CLUSTER": "1"}).redis_cluster


async def test_a_cluster_missing_slots_is_refused(tmp_path: Path) -> None:
    assert BINARY is not None
    port = cluster_port()
    node = subprocess.Popen([BINARY, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                             "--dir", str(tmp_path), "--save", ""], stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        bare = Node(port, tmp_path)
        LocalCluster._until(lambda: LocalCluster._try(bare, "PING"), 20, "redis-server")
        bare.client().execute_command("CLUSTER ADDSLOTS", *range(0, 100))
        client = open_cluster(f"redis://127.0.0.1:{port}", socket_timeout=2)
        with pytest.raises(ClusterRefused, match=r"does not serve every hash slot \(100 of 16384\)"):
            await client.ping()
        await client.aclose()
        # A program stops at start, saying so.
        env = {"REDIS_URL": f"redis://127.0.0.1:{port}", "TRACKER_REDIS_CLUSTER": "1",
               "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres", "PATH": str(BIN)}  # fmt: skip
        done = subprocess.run([str(BIN / "flusher"), "--burst"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert "does not serve every hash slot" in done.stdout + done.stderr
    finally:
        node.kill()
        node.wait()


async def test_doctor_shows_the_nodes_slots_and_replication_lag(cluster: LocalCluster) -> None:
    found = await check_redis(cluster.url, cluster=True)
    checks = {f.check: f for f in found}
    assert checks["cluster"].level == "ok" and "16384" in checks["cluster"].detail
    nodes = [f for f in found if f.check.startswith("node ")]
    assert len(nodes) == 3 and all("replica" in f.detail for f in nodes), [f.detail for f in nodes]
    assert all("lag" in f.detail for f in nodes)


def test_tracker_stats_reads_the_cluster(cluster: LocalCluster) -> None:
    from tracker.ops.stats import collect, connect

    settings = Settings.from_env({}, redis_url=cluster.url, redis_cluster=True,
                                 stream_prefix="stats" + str(time.time_ns()), stream_shards=SHARDS)  # fmt: skip
    redis = connect(settings)
    try:
        stats = collect(settings, redis)
    finally:
        redis.close()
    assert [s.stream for s in stats.streams] == [event_stream(settings.stream_prefix, n) for n in range(SHARDS)]
    assert stats.redis.used_memory_bytes > 0 and stats.redis.version

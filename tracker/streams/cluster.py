"""Redis Cluster (TRACKER_REDIS_CLUSTER=1): the client every program opens, its checks, commands on every master.

REDIS_URL names any node of the cluster, or a comma list of seed nodes
(`redis://10.0.0.1:7000,redis://10.0.0.2:7000`, or `redis://10.0.0.1:7000,10.0.0.2:7000`
with the first URL's scheme and credentials); the client learns the rest from
CLUSTER SLOTS and follows MOVED and ASK by itself (a redirect is not a retry:
the command did not run).

Two kinds of cluster failure are told apart, as the programs' retry policy
(tracker.streams.failures) needs them:

    refused      the seed is a single Redis, not a cluster node, or the cluster
                 does not serve every hash slot, when the client first learns
                 it: `ClusterRefused`, one line saying what is wrong. Retrying
                 cannot help; the program stops.
    unavailable  later on, a master died and its replica is not promoted yet
                 (CLUSTERDOWN, a slot with no node, a slot map that cannot be
                 read): `ClusterUnavailable`, a ConnectionError, so whatever
                 waits out a Redis outage (the edge's spool, the consumers'
                 retries) waits this out too. The next command reads the slot
                 map again. Also a command whose connection redis-py closed
                 under it: re-reading the slot map closes every connection of
                 the client, and a command in flight on one of them fails
                 inside redis-py or the event loop's transport with a
                 RuntimeError ("the handler is closed") or an AttributeError
                 on the writer it set to None. Left as they are, those end a
                 program on a failover another command noticed.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import ClusterDownError, RedisClusterException, RedisError, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError

from tracker.config import cluster_url_refusal, redact_url

SLOTS = 16384


class ClusterRefused(RedisClusterException, RedisError):
    """The cluster named by REDIS_URL cannot be used as it is (not a cluster, slots missing).

    A RedisError too, so that an edge worker that meets it spools its batches rather than losing them.
    """


class ClusterUnavailable(RedisConnectionError):
    """Some slots have no reachable master right now (a failover in progress): wait, as for any outage."""


def seed_urls(raw: str) -> list[str]:
    """`redis://a:7000,b:7001` -> ["redis://a:7000", "redis://b:7001"] (later seeds take the first one's scheme)."""
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    scheme = urlsplit(parts[0]).scheme if parts else "redis"
    return [part if "://" in part else f"{scheme}://{part}" for part in parts]


def _refusal(exc: RedisClusterException, seeds: str, ever_ready: bool) -> Exception:
    text = str(exc)
    if "Cluster mode is not enabled" in text:
        return ClusterRefused(f"TRACKER_REDIS_CLUSTER=1 but {seeds} is a single Redis, not a cluster node "
                              "(cluster_enabled:0): unset TRACKER_REDIS_CLUSTER or point REDIS_URL at a cluster node")
    if "slots are not covered" in text and not ever_ready:
        covered = text.split("startup_nodes. ", 1)[-1].split(" covered", 1)[0]
        return ClusterRefused(f"Redis Cluster at {seeds} does not serve every hash slot ({covered}): assign the "
                              "missing ones (redis-cli --cluster fix) before starting")  # fmt: skip
    return ClusterUnavailable(f"Redis Cluster at {seeds}: {text}")


class TrackerCluster(RedisCluster):
    """redis-py's asyncio cluster client, with its start-up and failover errors sorted (see the module)."""

    _ever_ready = False
    _seeds = ""

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        try:
            await super().initialize(*args, **kwargs)
        except ClusterRefused:
            raise
        except RedisClusterException as exc:
            raise _refusal(exc, self._seeds, self._ever_ready) from exc
        self._ever_ready = True
        return self

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except Exception as exc:
            unavailable = _unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise RedisClusterException("shard_hint is not supported in cluster mode")
        return _Pipeline(self, transaction)


def _unavailable(exc: Exception) -> ClusterUnavailable | None:
    """The outage a command's or pipeline's error stands for, or None when it is to be raised as it is
    (a refusal, or a caller's mistake such as CROSSSLOT or a keyless command in a pipeline)."""
    if isinstance(exc, (ClusterRefused, ClusterUnavailable)):
        return None
    if isinstance(exc, ClusterDownError) or (isinstance(exc, RedisClusterException) and _is_topology(exc)):
        return ClusterUnavailable(f"Redis Cluster: {exc}")
    if _closed_under_command(exc):
        return ClusterUnavailable(f"Redis Cluster: a connection closed under the command ({exc})")
    return None


def _is_topology(exc: RedisClusterException) -> bool:
    if isinstance(exc, SlotNotCoveredError):
        return True
    text = str(exc)
    return any(part in text for part in ("not covered", "cannot be connected", "could not agree", "No targets"))


# What a closed connection looks like from inside: uvloop's and asyncio's transports, redis-py's writer and reader.
_CLOSED_TYPES = (RuntimeError, AttributeError, TypeError)
_CLOSED_TEXTS = ("handler is closed", "transport is closed", "'NoneType' object has no attribute",
                 "'NoneType' object is not callable")  # fmt: skip
_CLIENT_FILES = ("/redis/asyncio/", "/asyncio/streams.py", "/asyncio/selector_events.py", "uvloop")


def _closed_under_command(exc: BaseException) -> bool:
    """An error of redis-py's own connection code after the connection was closed under a command in flight.

    Told by its text and by where it was raised (the innermost frame is redis-py's or the event loop's
    transport), so that the same error type raised by a caller's code is not waited out as an outage.
    """
    if not isinstance(exc, _CLOSED_TYPES) or not any(text in str(exc) for text in _CLOSED_TEXTS):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and any(part in frames[-1].filename for part in _CLIENT_FILES)


class _Pipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except Exception as exc:
            unavailable = _unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc


def open_cluster(url: str, **options: Any) -> TrackerCluster:
    """The cluster client over the seed nodes in `url`; `options` are redis-py's connection options (per node).

    Nothing connects here: the first command reads the slot map (and raises `ClusterRefused` when the
    cluster cannot be used as it is). Every slot must be served (`require_full_coverage`).
    """
    refused = cluster_url_refusal(url)
    if refused:
        raise ClusterRefused(refused)
    first, *others = seed_urls(url)
    startup = [ClusterNode(parts.hostname or "127.0.0.1", parts.port or 6379)
               for parts in map(urlsplit, others)]  # fmt: skip
    options.pop("db", None)  # a cluster has one database, and redis-py refuses the option even when it is 0
    client = TrackerCluster.from_url(first, startup_nodes=startup or None, require_full_coverage=True, **options)
    client._seeds = ", ".join(redact_url(seed) for seed in [first, *others])
    return client


def is_cluster(redis: Any) -> bool:
    return isinstance(redis, RedisCluster)


def masters(redis: Any) -> list[Any]:
    """The nodes that hold data: every primary of a cluster (as known now), or the one Redis."""
    return list(redis.get_primaries()) if is_cluster(redis) else [None]


def node_name(redis: Any, node: Any) -> str:
    if node is not None:
        return node.name
    kwargs = redis.connection_pool.connection_kwargs
    return f"{kwargs.get('host', kwargs.get('path', '?'))}:{kwargs.get('port', '')}".rstrip(":")


async def on_masters(redis: Redis | RedisCluster, *command: Any) -> dict[str, Any]:
    """Run one keyless command on every master at once: {"host:port": reply} (an error is the reply)."""
    if is_cluster(redis):
        await redis.initialize()  # a client that has not run a command yet knows no node
    nodes = masters(redis)

    async def run(node: Any) -> Any:
        if node is None:
            return await redis.execute_command(*command)
        return await redis.execute_command(*command, target_nodes=node)

    replies = await asyncio.gather(*(run(node) for node in nodes), return_exceptions=True)
    return {node_name(redis, node): reply for node, reply in zip(nodes, replies, strict=True)}


async def fullest_memory(redis: Redis | RedisCluster) -> dict[str, Any]:
    """INFO memory of the master closest to its maxmemory (the edge spools on the first to fill up).

    A master that does not answer is left out; none answering raises its error.
    """
    if not is_cluster(redis):
        return await redis.info("memory")
    replies = await on_masters(redis, "INFO", "memory")
    infos = [reply for reply in replies.values() if isinstance(reply, dict)]
    if not infos:
        raise next(iter(replies.values()), ClusterUnavailable("Redis Cluster: no master known"))

    return fullest(infos)


def fullest(infos: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Of several masters' INFO replies, the one closest to its maxmemory (the first to fill up)."""

    def ratio(info: dict[str, Any]) -> float:
        limit = int(info.get("maxmemory", 0) or 0)
        return int(info.get("used_memory", 0) or 0) / limit if limit else 0.0

    return max(infos, key=ratio)


def slot_of(key: str | bytes) -> int:
    """The hash slot of a key (its hash tag's when it has one), as the cluster computes it."""
    from redis.crc import key_slot

    return key_slot(key.encode() if isinstance(key, str) else key)


async def forget_slot_map(redis: Any) -> None:
    """Drop a cluster client's connections and slot map, so that its next command reads the map again.

    For clients without retries (the edge's): redis-py refreshes the map itself on a failed command,
    but not on a failed pipeline, which would otherwise keep going to a master that is gone.
    """
    if is_cluster(redis):
        await redis.aclose()


def plain_client(url: str, cluster: bool, **options: Any) -> Redis | RedisCluster:
    """A client with redis-py's own reply shapes: the cluster client with `cluster`, else the one Redis's."""
    return open_cluster(url, **options) if cluster else Redis.from_url(url, **options)

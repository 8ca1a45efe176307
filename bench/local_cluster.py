"""A Redis Cluster of real `redis-server` processes on loopback ports, for the cluster tests and `bench.scale`.

`LocalCluster` starts the nodes (cluster mode, append-only), gives each master
its share of the 16384 slots (CLUSTER ADDSLOTS), introduces them (CLUSTER MEET)
and makes the replicas (CLUSTER REPLICATE); `kill` and `restart` are the
failover's tools.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tracker.streams.cluster import SLOTS, slot_of


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, and below 65536."""
    import random
    import socket

    for _ in range(200):
        port = random.randrange(20000, 30000)
        try:
            with socket.socket() as one, socket.socket() as bus:
                one.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair for a cluster node")


def cluster_binary() -> tuple[str | None, str]:
    """(path of a redis-server that can run a cluster, or None, and why not)."""
    candidates = [Path(sys.executable).parent / "redis-server", shutil.which("redis-server")]
    best: tuple[tuple[int, ...], str] | None = None
    for path in filter(None, candidates):
        try:
            out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10).stdout
        except OSError:
            continue
        found = re.search(r"v=(\d+)\.(\d+)", out)
        version = tuple(int(n) for n in found.groups()) if found else (0,)
        if version >= (6, 2) and (best is None or version > best[0]):  # XAUTOCLAIM and cluster mode
            best = (version, str(path))
    if best is None:
        return None, "no redis-server 6.2 or newer (cluster mode, XAUTOCLAIM) on PATH or in the virtualenv"
    return best[1], ""


@dataclass
class Node:
    port: int
    folder: Path
    process: subprocess.Popen | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=2, decode_responses=True)


@dataclass
class LocalCluster:
    folder: Path
    binary: str
    masters: int = 3
    replicas_each: int = 1
    node_timeout_ms: int = 1000
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A comma list of every node: the programs' REDIS_URL (any one would do)."""
        return ",".join(f"redis://127.0.0.1:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 60.0) -> None:
        count = self.masters * (1 + self.replicas_each)
        self.nodes = [Node(cluster_port(), self.folder / f"node-{n}") for n in range(count)]
        for node in self.nodes:
            node.folder.mkdir(parents=True, exist_ok=True)
            self._spawn(node)
        for node in self.nodes:
            self._wait_up(node, timeout)
        masters, replicas = self.nodes[: self.masters], self.nodes[self.masters :]
        share = SLOTS // self.masters
        for n, node in enumerate(masters):
            first, last = n * share, SLOTS - 1 if n == self.masters - 1 else (n + 1) * share - 1
            node.client().execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
        for node in self.nodes[1:]:
            node.client().execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port)
        self._until(lambda: all(len(self._known(node)) == count for node in self.nodes), timeout, "nodes to meet")
        for n, node in enumerate(replicas):
            master = masters[n % self.masters]
            master_id = master.client().execute_command("CLUSTER MYID")
            self._until(lambda m=master_id, r=node: self._try(r, "CLUSTER REPLICATE", m), timeout, "a replica")
        self.wait_ok(timeout)

    def _spawn(self, node: Node) -> None:
        args = [self.binary, "--port", str(node.port), "--bind", "127.0.0.1", "--dir", str(node.folder),
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms), "--appendonly", "yes",
                "--appendfsync", "everysec", "--save", "", "--maxmemory-policy", "noeviction",
                "--repl-diskless-sync-delay", "0",
                "--logfile", str(node.folder / "redis.log")]  # fmt: skip
        node.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    def _wait_up(self, node: Node, timeout: float) -> None:
        self._until(lambda: self._try(node, "PING"), timeout, f"redis-server on port {node.port}")

    @staticmethod
    def _try(node: Node, *command: object) -> bool:
        try:
            node.client().execute_command(*command)
            return True
        except redis.RedisError:
            return False

    @staticmethod
    def _known(node: Node) -> dict[str, dict]:
        """CLUSTER NODES as redis-py parses it: {"host:port": {"flags", "slots", ...}}."""
        try:
            return node.client().execute_command("CLUSTER NODES")
        except redis.RedisError:
            return {}

    @staticmethod
    def _until(condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def state_ok(self, node: Node) -> bool:
        try:
            info = node.client().execute_command("CLUSTER INFO")
        except redis.RedisError:
            return False
        return info.get("cluster_state") == "ok" and int(info.get("cluster_slots_ok", 0)) == SLOTS

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Every live node sees every slot served, and every master has an online replica."""

        def ready() -> bool:
            live = [node for node in self.nodes if node.process is not None]
            if not all(self.state_ok(node) for node in live):
                return False
            for port in self.master_ports():
                info = self.node(port).client().info("replication")
                if self.replicas_each and not any(
                        isinstance(v, dict) and v.get("state") == "online" for v in info.values()):  # fmt: skip
                    return False
            return True

        self._until(ready, timeout, "the cluster to be ok with a replica for every master")

    def node(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def master_ports(self) -> list[int]:
        """Ports of the masters that serve slots, as a live node sees them now."""
        for node in self.nodes:
            if node.process is None:
                continue
            known = self._known(node)
            if known:
                return sorted(int(address.rsplit(":", 1)[1] or node.port) for address, facts in known.items()
                              if "master" in facts["flags"] and "fail" not in facts["flags"] and facts["slots"])
        return []

    def master_of(self, key: str) -> int:
        slot = slot_of(key)
        for node in self.nodes:
            if node.process is None:
                continue
            for first, last, master, *_ in node.client().execute_command("CLUSTER SLOTS"):
                if int(first) <= slot <= int(last):
                    return int(master[1])
        raise AssertionError(f"no node serves slot {slot}")

    def kill(self, port: int) -> None:
        node = self.node(port)
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()
        node.process = None

    def restart(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node again from its folder: it rejoins (as a replica, if it was failed over)."""
        node = self.node(port)
        self._spawn(node)
        self._wait_up(node, timeout)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    node.process.kill()
                node.process.wait()
                node.process = None
        shutil.rmtree(self.folder, ignore_errors=True)

"""A whole stack on a Redis Cluster (`bench.local_cluster.LocalCluster`).

`ClusterStack` is `tests.rigs.fault_rig.Rig` on such a cluster:
real edges, flushers and a forwarder, started with TRACKER_REDIS_CLUSTER=1.
Used by tests/tracker/test_cluster.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
from dataclasses import dataclass, field

import httpx

from bench.local_cluster import LocalCluster
from tests.rigs.fault_rig import BIN, Rig, free_port
from tracker.streams.cluster import open_cluster


@dataclass
class ClusterStack(Rig):
    """`Rig` on a `LocalCluster`: edges, flushers and a forwarder with TRACKER_REDIS_CLUSTER=1."""

    cluster: LocalCluster | None = None
    edge_ports: list[int] = field(default_factory=list)

    def start_redis(self) -> None:
        raise AssertionError("the cluster is started by its fixture")

    @property
    def redis_url(self) -> str:
        assert self.cluster is not None
        return self.cluster.url

    def env(self, **variables: str) -> dict[str, str]:
        return {**super().env(**variables), "TRACKER_REDIS_CLUSTER": "1", **variables}

    def client(self):
        return open_cluster(self.redis_url, socket_timeout=5)

    async def start_edges(self, count: int, workers: int, **variables: str) -> None:
        for n in range(count):
            port = free_port()
            self._spawn(f"edge-{n}", [str(BIN / "edge"), "--port", str(port), "--workers", str(workers),
                                      "--log-level", "warning"], **variables)  # fmt: skip
            self.edge_ports.append(port)
        self.edge_port = self.edge_ports[0]
        async with httpx.AsyncClient() as http:
            for port in self.edge_ports:
                for _ in range(400):
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                            break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError(f"an edge did not start; see {self.tmp}")

    def start_forwarder(self, name: str = "forwarder-1", **variables: str) -> subprocess.Popen:
        return self._spawn(name, [str(BIN / "forwarder"), "--consumer", name, "--log-level", "info"], **variables)

    def edge_url(self, connection: int) -> str:
        """Load connections spread over every edge."""
        return f"http://127.0.0.1:{self.edge_ports[connection % len(self.edge_ports)]}"

    async def dropped(self) -> int:
        total = 0
        async with httpx.AsyncClient(timeout=5) as http:
            for port in self.edge_ports:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                total += sum(int(float(v)) for v in re.findall(r"^edge_spool_dropped_total(?:\{[^}]*\})? ([0-9.e+]+)$",
                                                               text, re.M))  # fmt: skip
        return total

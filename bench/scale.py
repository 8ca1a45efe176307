"""Redis stream appends per master, on one node and on a local 3-master cluster, with and without WAIT.

    python -m bench.scale [--seconds 5] [--batch 64] [--writers 8]

Each writer is an edge-like client appending one msgpack entry of `--batch` events per shard per call,
with the edge's own script (edge.event_buffer._APPEND) in one pipeline, as EventBuffer._xadd does.
Prints appends/s and events/s per configuration, and per master. The other tiers (edge requests per
worker core, flusher events per Postgres core, forwarder deliveries per process) are measured by
bench/run.py, bench/flusher_drain.py and bench/hooks_drain.py; docs/capacity.md combines them.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from bench.local_cluster import LocalCluster, cluster_binary
from edge.event_buffer import _APPEND
from tracker.contract.keys import ENTRY_FIELD, event_streams
from tracker.streams.cluster import open_cluster


async def appends(client, streams: list[str], seconds: float, batch: int, writers: int, wait: int) -> int:
    entry = b"\x00" * (100 * batch)  # about 100 bytes an event, as a real entry
    done = 0
    stop = time.monotonic() + seconds

    async def writer(index: int) -> None:
        nonlocal done
        cluster = hasattr(client, "get_node_from_key")
        while time.monotonic() < stop:
            async with client.pipeline(transaction=False) as pipe:
                for stream in streams:
                    pipe.eval(_APPEND, 1, stream, ENTRY_FIELD, entry)
                if wait:
                    targets = {client.get_node_from_key(s).name: client.get_node_from_key(s) for s in streams} \
                        if cluster else {"one": None}
                    for node in targets.values():
                        kwargs = {"target_nodes": node} if node is not None else {}
                        pipe.execute_command("WAIT", wait, 500, **kwargs)
                await pipe.execute()
            done += len(streams)

    await asyncio.gather(*(writer(i) for i in range(writers)))
    for stream in streams:
        await client.delete(stream)
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=64, help="events per entry")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--shards", type=int, default=12)
    args = parser.parse_args()
    binary, why = cluster_binary()
    if binary is None:
        raise SystemExit(f"bench.scale: {why}")
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    local = LocalCluster(folder / "cluster", binary)
    single = LocalCluster(folder / "single", binary, masters=1)
    try:
        local.start()
        single.start()
        streams = event_streams("bench", args.shards)
        rows = []
        for name, factory, masters in (
            ("1 master + 1 replica", lambda: open_cluster(single.url, socket_timeout=5), 1),
            ("3 masters + 3 replicas", lambda: open_cluster(local.url, socket_timeout=5), 3),
        ):
            for wait in (0, 1):
                client = factory()
                count = asyncio.run(appends(client, streams, args.seconds, args.batch, args.writers, wait))
                rate = count / args.seconds
                rows.append((name, wait, rate, rate * args.batch, rate / masters))
        print("| Redis | WAIT | appends/s | events/s | appends/s per master |")
        print("| --- | --- | --- | --- | --- |")
        for name, wait, rate, events, per in rows:
            print(f"| {name} | {wait} | {rate:,.0f} | {events:,.0f} | {per:,.0f} |")
    finally:
        local.stop()
        single.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

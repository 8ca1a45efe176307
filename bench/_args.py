"""`python -m bench.run`'s flags, and the targets it can measure."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TARGETS = ["nginx", "bare", "edge_open", "edge_click"]


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    env = os.environ
    services = parser.add_argument_group("services")
    services.add_argument(
        "--redis-url", default=env.get("REDIS_URL", ""),
        help="Redis for the edge's streams (default: $REDIS_URL); empty: an embedded redis-server in a temp folder. "
        "The edge writes under a fresh random prefix, deleted at the end",
    )  # fmt: skip
    services.add_argument(
        "--database-url", default=env.get("DATABASE_URL", ""),
        help="an admin Postgres URL (default: $DATABASE_URL), e.g. postgresql://postgres@127.0.0.1:5432/postgres: "
        "a database trk_bench_<random> is created there and dropped at the end; empty: an embedded Postgres",
    )  # fmt: skip
    services.add_argument(
        "--embedded", action="store_true", help="use embedded Redis and Postgres even when URLs are given"
    )
    services.add_argument(
        "--no-install", action="store_true", help="fail instead of running apt-get when wrk or nginx is missing"
    )

    load = parser.add_argument_group("load")
    load.add_argument("--workers", type=int, default=1, help="edge worker processes")
    load.add_argument(
        "--connections", default="4,64", help="comma-separated wrk connection counts; latency targets use 4"
    )
    load.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    load.add_argument("--warmup", type=float, default=3, help="seconds of wrk warm-up per target before round 1")
    load.add_argument("--rounds", type=int, default=3, help="rounds over every target; the report shows medians")
    load.add_argument("--threads", type=int, default=1, help="wrk threads (-t)")
    load.add_argument("--tokens", type=int, default=1000, help="distinct tokens (one profile each) wrk rotates over")
    load.add_argument("--messages", type=int, default=10, help="seeded messages (5 links each) the tokens point at")
    load.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {', '.join(TARGETS)}")

    pinning = parser.add_argument_group("CPU pinning (taskset)")
    pinning.add_argument("--server-cpus", default="0", help="CPU list for the server under test (and its workers)")
    pinning.add_argument("--client-cpus", default="1", help="CPU list for wrk (and an embedded Redis)")
    pinning.add_argument("--no-pin", action="store_true", help="let the scheduler place every process")

    output = parser.add_argument_group("output")
    output.add_argument("--json", type=Path, default=REPO / "bench/results/latest.json", help="where to write JSON")
    output.add_argument(
        "--profile", type=float, default=0, metavar="SECONDS",
        help="after the rounds, record the edge worker with py-spy for this long under wrk load on /o and /c "
        "(64 conns) and print the top frames; raw stacks are kept next to the JSON",
    )  # fmt: skip
    output.add_argument("--keep-temp", action="store_true", help="keep the temp folder (server logs, configs)")
    output.add_argument("--strict", action="store_true", help="exit 1 when any target is missed")
    return parser


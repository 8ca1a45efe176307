"""`edge`: serve the tracking edge with Granian (ASGI, uvloop), settings from the environment."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from tracker.config import Settings, SettingsError, settings_help
from tracker.contract.exits import EXIT_USAGE
from tracker.streams.logs import print_line_by_line, setup_logging, start_line

log = logging.getLogger("edge")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge",
        description="Serve the tracking edge: open pixels, click redirects and the rest of the public routes. "
        "Settings come from the environment (below); flags set how it is served.",
        epilog="environment:\n" + settings_help("edge", "reports", "pages"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on [default: %(default)s]")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on [default: %(default)s]")
    parser.add_argument("--workers", type=int, default=1, help="worker processes [default: %(default)s]")
    parser.add_argument("--backlog", type=int, default=2048, help="listen backlog [default: %(default)s]")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="[default: TRACKER_LOG_LEVEL, else info]"
    )
    return parser


def port_taken(host: str, port: int) -> str | None:
    """Why nothing new can listen on host:port (None: it is free).

    Granian listens with SO_REUSEPORT, so a second edge on the same port would
    share the traffic of the first without a word, and a port held by another
    program ends in a Rust backtrace. A plain socket (SO_REUSEADDR only, which
    Linux refuses while anything listens on the port) finds out first.
    """
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror}"
    family, kind, proto, _name, address = infos[0]  # the address Granian will bind
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            return reason + " (another edge or program holds it)" if exc.errno == errno.EADDRINUSE else reason
    return None


def cluster_refused(settings: Settings) -> str | None:
    """With TRACKER_REDIS_CLUSTER=1: why the cluster cannot be used (a single Redis, slots missing), else None.

    Checked once here: a worker refused later would only spool. An unreachable cluster is not refused
    (the edge spools until it is back).
    """
    if not settings.redis_cluster:
        return None
    import asyncio

    from tracker.streams.cluster import ClusterRefused, open_cluster

    async def probe() -> str | None:
        client = open_cluster(settings.redis_url, socket_timeout=3, socket_connect_timeout=3)
        try:
            await client.ping()
        except ClusterRefused as exc:
            return str(exc)
        except Exception:
            return None
        finally:
            await client.aclose()
        return None

    return asyncio.run(probe())


def main(argv: list[str] | None = None) -> int:
    print_line_by_line()
    args = build_parser().parse_args(argv)
    try:
        # Fail here, in the parent, with the variable's name, rather than in every worker.
        settings = Settings.from_env()
        settings.require("redis_url", "database_url", "signing_keys")
    except SettingsError as exc:
        print(f"edge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    refused = cluster_refused(settings)
    if refused:
        print(f"edge: {refused}", file=sys.stderr)
        return EXIT_USAGE
    taken = port_taken(args.host, args.port)
    if taken:
        print(f"edge: cannot listen on {args.host}:{args.port}: {taken}", file=sys.stderr)
        return EXIT_USAGE
    level = args.log_level or settings.log_level
    # Granian configures logging again in each worker it starts: the same dictionary, so the same lines.
    log_config = setup_logging(settings, level)
    # Every worker writes its metric values here, so any worker's /metrics can sum them all.
    # Set before the workers start (they inherit it) and emptied: values from an earlier run would add up.
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="edge-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    Path(metrics_dir).mkdir(parents=True, exist_ok=True)
    for stale in Path(metrics_dir).glob("*.db"):
        stale.unlink()
    from granian import Granian
    from granian.constants import Interfaces, Loops

    server = Granian(
        "edge.app:create_app",
        factory=True,
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        loop=Loops.uvloop,
        backlog=args.backlog,
        log_level=level,
        log_dictconfig=log_config,
        respawn_failed_workers=True,
    )
    workers = f"{args.workers} worker{'s' if args.workers != 1 else ''}"
    log.info(start_line("edge", settings, f"on http://{_netloc(args.host, args.port)} ({workers})"))
    server.serve()
    log.info("edge stopped")
    if metrics_dir.startswith(tempfile.gettempdir()):  # ours: made above for this run
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


if __name__ == "__main__":
    sys.exit(main())

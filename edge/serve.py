"""`edge`: serve the tracking edge with Granian (ASGI, uvloop), settings from the environment."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tracker.config import Settings, SettingsError, settings_help


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge",
        description="Serve the tracking edge: open pixels, click redirects and the rest of the public routes. "
        "Settings come from the environment (below); flags set how it is served.",
        epilog="environment:\n" + settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on [default: %(default)s]")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on [default: %(default)s]")
    parser.add_argument("--workers", type=int, default=1, help="worker processes [default: %(default)s]")
    parser.add_argument("--backlog", type=int, default=2048, help="listen backlog [default: %(default)s]")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="[default: %(default)s]"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # Fail here, in the parent, with the variable's name, rather than in every worker.
        settings = Settings.from_env()
        settings.require("redis_url", "database_url", "signing_keys")
    except SettingsError as exc:
        print(f"edge: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Every worker writes its metric values here, so any worker's /metrics can sum them all.
    # Set before the workers start (they inherit it) and emptied: values from an earlier run would add up.
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="edge-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    Path(metrics_dir).mkdir(parents=True, exist_ok=True)
    for stale in Path(metrics_dir).glob("*.db"):
        stale.unlink()
    from granian import Granian
    from granian.constants import Interfaces, Loops

    Granian(
        "edge.app:create_app",
        factory=True,
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        loop=Loops.uvloop,
        backlog=args.backlog,
        log_level=args.log_level,
        respawn_failed_workers=True,
    ).serve()
    if metrics_dir.startswith(tempfile.gettempdir()):  # ours: made above for this run
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

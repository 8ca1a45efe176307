"""`flusher`: move events from the Redis streams into Postgres; runs as a sidecar."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from tracker.config import SHARED, Settings, SettingsError, settings_help
from tracker.contract.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from tracker.streams.logs import print_line_by_line, setup_logging, start_line

log = logging.getLogger("flusher")

_DESCRIPTION = """\
Read events from the Redis stream shards as a consumer of the group, store them
in Postgres (one transaction per batch: COPY, insert with dedupe on the event id,
profile effects and counters), then acknowledge them and trim the streams up to
the oldest entry any group still needs.

On start it applies missing schema migrations (FLUSHER_MIGRATE, --no-migrate),
creates the consumer groups, re-reads its own pending entries, then takes new
ones; entries idle longer than FLUSHER_CLAIM_IDLE_MS in other consumers are
taken over. SIGTERM or SIGINT: the batch in hand is finished and acknowledged,
then it exits 0. Operational failures of Redis or Postgres (down, full,
read-only, refusing connections) are retried with backoff and logged when they
start and when they end; a fatal one (bad credentials, no such database, the
schema missing) ends it with exit code 1 and one line saying why.

Give each replica a stable --consumer name (e.g. the pod name) so that, after a
restart, it picks up its own pending entries at once instead of waiting for the
claim time. Liveness probe: `flusher --check` (same environment); it fails when
the flusher is gone, and also when it holds batches that have not moved for
FLUSHER_HEARTBEAT_TTL_S.

exit codes: 0 ok, 1 failed (or --check: no live heartbeat), 2 bad usage or settings"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flusher",
        description=_DESCRIPTION,
        epilog="environment (flags win over it):\n" + environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--burst", action="store_true", help="drain what is in the streams now, then exit")
    mode.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if this consumer's heartbeat key is live, else 1 (without --consumer or FLUSHER_CONSUMER: "
        "any flusher on this host)",
    )
    mode.add_argument("--migrate", action="store_true", help="apply schema migrations, then exit")
    parser.add_argument("--no-migrate", action="store_true", help="do not apply migrations at start")
    parser.add_argument("--consumer", help="consumer name (FLUSHER_CONSUMER) [default: hostname-pid]")
    parser.add_argument("--redis-url", help="REDIS_URL")
    parser.add_argument("--database-url", help="DATABASE_URL")
    parser.add_argument("--batch-max-events", type=int, help="FLUSHER_BATCH_MAX_EVENTS")
    parser.add_argument("--batch-max-age-ms", type=float, help="FLUSHER_BATCH_MAX_AGE_MS")
    parser.add_argument("--claim-idle-ms", type=int, help="FLUSHER_CLAIM_IDLE_MS")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="[default: TRACKER_LOG_LEVEL, else info]"
    )
    return parser


def environment_help() -> str:
    return settings_help("flusher", shared=SHARED)


def settings_from(args: argparse.Namespace) -> Settings:
    # Flags are read as the variables they stand for, so a bad value is named the same way.
    flags = {
        "FLUSHER_CONSUMER": args.consumer,
        "REDIS_URL": args.redis_url,
        "DATABASE_URL": args.database_url,
        "FLUSHER_BATCH_MAX_EVENTS": args.batch_max_events,
        "FLUSHER_BATCH_MAX_AGE_MS": args.batch_max_age_ms,
        "FLUSHER_CLAIM_IDLE_MS": args.claim_idle_ms,
        "FLUSHER_MIGRATE": "false" if args.no_migrate else None,
    }
    return Settings.from_env({**os.environ, **{name: str(value) for name, value in flags.items() if value is not None}})


def main(argv: list[str] | None = None) -> int:
    print_line_by_line()
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
        setup_logging(settings, args.log_level)
        if args.check:
            settings.require("redis_url")
            return asyncio.run(check(settings))
        settings.require("redis_url", "database_url")
    except SettingsError as exc:
        print(f"flusher: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.migrate:
        return asyncio.run(_or_failed(migrate(settings)))
    return _run(_or_failed(serve(settings, burst=args.burst)))


async def migrate(settings: Settings) -> int:
    from tracker.contract.schema import migrate as apply

    applied = await apply(settings.database_url)
    print("applied: " + (", ".join(applied) if applied else "nothing, the schema is current"))
    return EXIT_OK


async def _or_failed(main: Coroutine[Any, Any, int]) -> int:
    """`main`'s exit code; EXIT_FAILED with one line when it raised (a fatal error: no traceback)."""
    from tracker.streams.retry import describe, fatal_hint, is_fatal

    try:
        return await main
    except Exception as exc:
        if is_fatal(exc):
            log.error("fatal, exiting: %s (%s)", describe(exc), fatal_hint(exc))
        else:
            log.error("stopped on an unexpected error, exiting: %s", describe(exc), exc_info=exc)
        return EXIT_FAILED


async def serve(settings: Settings, burst: bool) -> int:
    from flusher.worker import Flusher
    from tracker.contract.schema import migrate as apply
    from tracker.streams.heartbeat import default_consumer_name
    from tracker.streams.retry import POSTGRES_TRANSIENT, Retry, Stopping

    log.info(start_line("flusher", settings, f"as {settings.flusher.consumer or default_consumer_name()}"))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    if settings.flusher.migrate:
        # A signal cuts the pause short and ends the tries: there is no batch in hand to finish.
        retry = Retry(settings.flusher.retry_min_s, settings.flusher.retry_max_s, log=logging.getLogger("flusher"),
                      closing=lambda: 0.0 if stopping.is_set() else None,
                      sleep=lambda seconds: _sleep_unless(stopping, seconds))  # fmt: skip

        async def migrate_unless_stopping() -> None:
            if stopping.is_set():
                raise Stopping("migrations")
            await apply(settings.database_url)

        try:
            await retry.run("Postgres: migrations", migrate_unless_stopping, POSTGRES_TRANSIENT)
        except Stopping:
            pass
        if stopping.is_set():
            return EXIT_OK
    flusher = Flusher(settings, burst=burst)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, flusher.close)
    await flusher.run()
    return EXIT_OK


async def check(settings: Settings) -> int:
    from tracker.contract.keys import flusher_heartbeat_key
    from tracker.streams.heartbeat import check_heartbeat

    def key(consumer: str) -> str:
        return flusher_heartbeat_key(settings.stream_prefix, consumer)

    return await check_heartbeat(settings.redis_url, key, settings.flusher.consumer, "flusher", settings.redis_cluster)


def _run(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # not on every platform; asyncio's own loop does the same, a little slower
        return asyncio.run(main)
    return uvloop.run(main)


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        pass


if __name__ == "__main__":
    sys.exit(main())

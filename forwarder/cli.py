"""`forwarder` (also installed as `hooks`): deliver committed events to the action hooks' destinations."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from tracker.config import SHARED, Settings, SettingsError, settings_help
from tracker.contract.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from tracker.streams.logs import print_line_by_line, setup_logging, start_line

_DESCRIPTION = """\
Read the committed streams (the flusher copies every batch there after its
Postgres commit) with one consumer group per hook, filter, and deliver to each
hook's destination: HTTP (signed JSON batch POST), RabbitMQ (persistent,
confirmed) or Kafka (keyed by profile, acks=all). Entries are acknowledged only
once the destination acknowledged; a failing destination is retried with
doubling pauses and jitter (TRACKER_HOOKS_RETRY_MIN_S .. _MAX_S), set to
`failing` after TRACKER_HOOKS_PAUSE_AFTER_FAILURES failures in a row (its backlog
kept until it is resumed through the API), and deliveries with events older than
TRACKER_HOOKS_DEAD_LETTER_AFTER_S that still fail go to the hook's dead letters.

SIGTERM or SIGINT: the deliveries in hand finish, then it exits 0. Failures of
Redis or Postgres that pass (down, full, read-only, refusing connections) are
retried and logged when they start and when they end; a fatal one (bad
credentials, no such database, the schema missing) ends it with exit code 1
and one line saying why. Give each replica a stable --consumer name so that a
restart re-sends its own pending entries at once. Liveness probe: `forwarder
--check`; it fails when the worker is gone, and also when a hook holds entries
that have not moved for TRACKER_HOOKS_HEARTBEAT_TTL_S (Redis or Postgres stuck;
a failing destination does not count).

exit codes: 0 ok, 1 failed (--check: no live heartbeat; test: not delivered), 2 bad usage or settings"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forwarder", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="environment (flags win over it):\n" + environment_help(),
    )  # fmt: skip
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--burst", action="store_true", help="deliver what is in the streams now, then exit")
    mode.add_argument("--check", action="store_true", help="exit 0 if a hooks worker heartbeat is live, else 1")
    mode.add_argument("--test", type=int, metavar="HOOK_ID", help="send one sample event through a hook now")
    parser.add_argument("--consumer", help="consumer name (TRACKER_HOOKS_CONSUMER) [default: hostname-pid]")
    parser.add_argument("--redis-url", help="REDIS_URL")
    parser.add_argument("--database-url", help="DATABASE_URL")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="[default: TRACKER_LOG_LEVEL, else info]"
    )
    return parser


def environment_help() -> str:
    return settings_help("forwarder", shared=SHARED)


def main(argv: list[str] | None = None) -> int:
    print_line_by_line()
    args = build_parser().parse_args(argv)
    flags = {"TRACKER_HOOKS_CONSUMER": args.consumer, "REDIS_URL": args.redis_url, "DATABASE_URL": args.database_url}
    try:
        settings = Settings.from_env({**os.environ, **{name: value for name, value in flags.items() if value}})
        setup_logging(settings, args.log_level)
        settings.require(*(("redis_url",) if args.check else ("redis_url", "database_url")))
    except SettingsError as exc:
        print(f"forwarder: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.check:
        return asyncio.run(check(settings))
    if args.test is not None:
        return asyncio.run(test(settings, args.test))
    return asyncio.run(serve(settings, burst=args.burst))


async def serve(settings: Settings, burst: bool) -> int:
    from forwarder.worker import HooksWorker
    from tracker.streams.retry import describe, fatal_hint, is_fatal

    worker = HooksWorker(settings, burst=burst)
    logging.getLogger("hooks").info(start_line("forwarder", settings, f"as {worker.consumer}"))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.close)
    try:
        await worker.run()
    except Exception as exc:
        log = logging.getLogger("hooks")
        if is_fatal(exc):
            log.error("fatal, exiting: %s (%s)", describe(exc), fatal_hint(exc))
        else:
            log.error("stopped on an unexpected error, exiting: %s", describe(exc), exc_info=exc)
        return EXIT_FAILED
    return EXIT_OK


async def test(settings: Settings, hook_id: int) -> int:
    import asyncpg

    from forwarder.registry import load_hook
    from forwarder.worker import deliver_sample
    from tracker.contract.events import EventIds
    from tracker.domain.destination_policy import DestinationPolicy
    from tracker.domain.secret_box import SecretBox, SecretKeyMissing

    conn = await asyncpg.connect(settings.database_url)
    try:
        definition = await load_hook(conn, hook_id, SecretBox.from_settings(settings))
    except SecretKeyMissing as exc:
        print(f"forwarder: hook {hook_id}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await conn.close()
    if definition is None:
        print(f"forwarder: no hook {hook_id}", file=sys.stderr)
        return EXIT_FAILED
    # The operator's own command: it sends whatever the hook's state, and the log line has the details.
    reply = await deliver_sample(definition, EventIds(), DestinationPolicy.from_settings(settings),
                                 settings.forwarder.test_timeout_s)  # fmt: skip
    print(f"{'delivered' if reply.ok else 'FAILED'} in {reply.took_ms} ms: {reply.answer}")
    return EXIT_OK if reply.ok else EXIT_FAILED


async def check(settings: Settings) -> int:
    from tracker.contract.keys import forwarder_heartbeat_key
    from tracker.streams.heartbeat import check_heartbeat

    def key(consumer: str) -> str:
        return forwarder_heartbeat_key(settings.stream_prefix, consumer)

    return await check_heartbeat(settings.redis_url, key, settings.forwarder.consumer, "forwarder",
                                 settings.redis_cluster)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

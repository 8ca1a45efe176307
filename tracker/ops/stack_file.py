"""The stack `tracker run` started, kept in its data folder so every other `tracker` command finds it.

`tracker run` writes `<data dir>/stack.env` (mode 0600) once its edge answers,
and removes it when it stops: one `NAME=value` line (shell-quoted) per setting
the programs it started were given (Redis and Postgres URLs, public URL, spool
folder, stream prefix and shards when set) and the files holding the keys it
generated, never the keys themselves. Other commands read `./var/stack.env`
for what their environment does not set (the environment wins, name by name);
`tracker env` prints it as `export` lines, keys included, for another shell or
folder.

A file left behind by a `tracker run` that was killed is stale: its process is
gone, or its Redis no longer answers. A stale file is ignored, and said to be.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracker.contract.exits import EXIT_FAILED, EXIT_OK

FILE_NAME = "stack.env"
# The data folder of `tracker run`, for every command: --data-dir, else this variable, else ./var.
DATA_DIR_VARIABLE = "TRACKER_DATA_DIR"
_PID = "TRACKER_RUN_PID"
# What the started programs were given that another command needs to reach and read the same stack.
STACK_VARIABLES = ("REDIS_URL", "DATABASE_URL", "TRACKER_PUBLIC_URL", "TRACKER_SPOOL_DIR", "TRACKER_STREAM_PREFIX",
                   "TRACKER_STREAM_SHARDS")  # fmt: skip
# Keys stay in their own files; the stack file names the file, and a reader takes the key from it.
KEY_FILES = {"TRACKER_SIGNING_KEYS": "TRACKER_SIGNING_KEYS_FILE",
             "TRACKER_HOOKS_SECRET_KEYS": "TRACKER_HOOKS_SECRET_KEYS_FILE"}  # fmt: skip


@dataclass(frozen=True)
class Stack:
    path: Path
    pid: int
    variables: dict[str, str]  # settings by variable name, keys read from their files
    unreadable: list[str] = field(default_factory=list)  # key files named but gone


def write_stack(data_dir: Path, env: Mapping[str, str], key_files: Mapping[str, Path], pid: int) -> Path:
    """Write the stack file of `tracker run` (process `pid`) from the environment its programs got."""
    path = data_dir / FILE_NAME
    lines = [f"# the stack `tracker run` started (pid {pid}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC); "
             "removed when it stops", f"{_PID}={pid}"]  # fmt: skip
    lines += [f"{name}={shlex.quote(env[name])}" for name in STACK_VARIABLES if env.get(name)]
    lines += [f"{KEY_FILES[name]}={shlex.quote(str(file.absolute()))}" for name, file in key_files.items()]
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{FILE_NAME}.{pid}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    tmp.replace(path)  # whole or not at all: a command reading meanwhile sees the old file or the new one
    return path


def remove_stack(data_dir: Path, pid: int) -> None:
    """Remove the stack file if it is still this process's (a later `tracker run` may have replaced it)."""
    path = data_dir / FILE_NAME
    stack = read_stack(path)
    if stack is not None and stack.pid == pid:
        path.unlink(missing_ok=True)


def read_stack(path: Path) -> Stack | None:
    """The stack file at `path`, None when there is none (or it is not one)."""
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    raw: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            words = shlex.split(value)
            raw[name.strip()] = words[0] if words else ""
    if not raw.get(_PID, "").isdigit():
        return None
    variables = {name: raw[name] for name in STACK_VARIABLES if raw.get(name)}
    unreadable = []
    for name, file_variable in KEY_FILES.items():
        if file_variable in raw:
            try:
                variables[name] = Path(raw[file_variable]).read_text().strip()
            except OSError:
                unreadable.append(raw[file_variable])
    return Stack(path, int(raw[_PID]), variables, unreadable)


def stale_reason(stack: Stack) -> str | None:
    """Why the stack is no longer running (None: it is): its process is gone, or its Redis does not answer."""
    try:
        os.kill(stack.pid, 0)
    except ProcessLookupError:
        return f"its `tracker run` (pid {stack.pid}) is gone"
    except PermissionError:
        pass  # alive, another user's
    url = stack.variables.get("REDIS_URL")
    if url:
        from redis import Redis
        from redis.exceptions import RedisError

        from tracker.streams.logs import host_of

        client = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.ping()
        except (RedisError, OSError):
            return f"its Redis ({host_of(url)}) does not answer"
        finally:
            client.close()
    return None


@dataclass(frozen=True)
class StackUse:
    """What `use_stack` did: the file it looked at, the variables it supplied, or why it ignored the file."""

    path: Path
    found: bool
    supplied: tuple[str, ...] = ()
    stale: str | None = None

    def note(self) -> str | None:
        if self.stale:
            return f"ignoring {self.path}: {self.stale} (a `tracker run` that stopped without removing it)"
        if self.supplied:
            return f"using {', '.join(self.supplied)} from {self.path} (the stack of `tracker run`)"
        return None


def default_data_dir(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(DATA_DIR_VARIABLE) or "var")


def add_data_dir_option(command: argparse.ArgumentParser) -> None:
    """--data-dir on a command: where `tracker run` keeps its data and its stack file."""
    command.add_argument(
        "--data-dir", type=Path, default=default_data_dir(), metavar="DIR",
        help=f"the data folder of `tracker run`: embedded servers, generated keys, spool and {FILE_NAME}, which "
        f"other commands read [default: ${DATA_DIR_VARIABLE}, else var]",
    )  # fmt: skip


@contextmanager
def using_stack(environ: MutableMapping[str, str], data_dir: Path) -> Iterator[StackUse]:
    """Within the block, what `environ` does not set comes from the live stack file in `data_dir` (the
    environment wins, name by name); the names it added are taken out again afterwards."""
    path = data_dir / FILE_NAME
    stack = read_stack(path)
    missing = {} if stack is None else {k: v for k, v in stack.variables.items() if not environ.get(k)}
    if stack is None or not missing:
        yield StackUse(path, found=stack is not None)
        return
    stale = stale_reason(stack)
    if stale:
        yield StackUse(path, found=True, stale=stale)
        return
    before = {name: environ.get(name) for name in missing}  # unset, or set to ""
    environ.update(missing)
    try:
        yield StackUse(path, found=True, supplied=tuple(missing))
    finally:
        for name, value in before.items():
            if value is None:
                environ.pop(name, None)
            else:
                environ[name] = value


def export_lines(stack: Stack) -> list[str]:
    """The stack as shell `export` lines, values quoted for sh/bash/zsh."""
    return [f"export {name}={shlex.quote(value)}" for name, value in stack.variables.items()]


def add_env_command(sub: Any) -> None:
    env = sub.add_parser(
        "env",
        help="print the settings of the stack `tracker run` started, as shell export lines",
        description=f"Print REDIS_URL, DATABASE_URL, TRACKER_PUBLIC_URL, the keys and the rest of what `tracker run` "
        f"gave its programs, from DATA_DIR/{FILE_NAME}, as `export` lines: `eval \"$(tracker env)\"` points this "
        "shell at that stack. Other tracker commands read the file of --data-dir (default $TRACKER_DATA_DIR, "
        "else ./var) themselves. Exit 1 when there is no "
        "stack file, or its `tracker run` has stopped.",
    )
    env.set_defaults(handler=cmd_env)


def cmd_env(args: argparse.Namespace) -> int:
    path = args.data_dir.absolute() / FILE_NAME
    stack = read_stack(path)
    if stack is None:
        print(f"tracker: no stack file {path}: is `tracker run` running with --data-dir {args.data_dir}?",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    stale = stale_reason(stack)
    if stale:
        print(f"tracker: {path} is stale: {stale}", file=sys.stderr)
        return EXIT_FAILED
    for unreadable in stack.unreadable:
        print(f"tracker: key file {unreadable} cannot be read; its keys are left out", file=sys.stderr)
    print(f"# the stack of `tracker run` (pid {stack.pid}), from {path}")
    print("\n".join(export_lines(stack)))
    return EXIT_OK

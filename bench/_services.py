"""What the targets need around them: Redis, a fresh database with seed data, tokens, nginx."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
import redis

from tracker.contract.keys import ENTRY_FIELD
from tracker.contract.schema import migrate
from tracker.contract.tokens import Channel, TokenKind, mint
from tracker.domain.link_tables import Link, create_message

# -- Postgres -----------------------------------------------------------------------------


def database_url_for(admin_url: str, name: str) -> str:
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _admin(admin_url: str, sql: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(admin_url: str) -> tuple[str, str]:
    """Create `trk_bench_<random>`; return its name and URL."""
    name = f"trk_bench_{secrets.token_hex(4)}"
    asyncio.run(_admin(admin_url, f'create database "{name}"'))
    return name, database_url_for(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    asyncio.run(_admin(admin_url, f'drop database if exists "{name}" with (force)'))


@dataclass(frozen=True)
class Seed:
    open_paths: list[str]
    click_paths: list[str]
    messages: int


async def _seed(database_url: str, keys: dict[int, bytes], key_id: int, tokens: int, messages: int) -> Seed:
    await migrate(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        links_per_message = 5
        message_ids: list[tuple[int, int]] = []
        for number in range(messages):
            links = [Link(f"https://example.com/m{number}/l{index}?utm=bench") for index in range(links_per_message)]
            message_ids.append(await create_message(conn, "email", f"bench message {number}", links))
    finally:
        await conn.close()
    open_paths, click_paths = [], []
    for i in range(tokens):
        message_id, version = message_ids[i % messages]
        profile_id = 1_000_000 + i  # a different profile per token, spread over every stream shard
        open_token = mint(keys, key_id, TokenKind.OPEN, Channel.EMAIL, message_id, profile_id)
        click_token = mint(
            keys, key_id, TokenKind.CLICK, Channel.EMAIL, message_id, profile_id, version, i % links_per_message
        )
        open_paths.append(f"/o/{open_token}")
        click_paths.append(f"/c/{click_token}")
    return Seed(open_paths, click_paths, messages)


def seed(database_url: str, keys: dict[int, bytes], key_id: int, tokens: int, messages: int) -> Seed:
    """Migrate, create `messages` messages with 5 links each, mint an open and a click token per profile."""
    return asyncio.run(_seed(database_url, keys, key_id, tokens, messages))


# -- Redis --------------------------------------------------------------------------------


_split = msgspec.msgpack.Decoder(list[msgspec.Raw]).decode
_ARRAY_HEADS = {*range(0x90, 0xA0), 0xDC, 0xDD}


def events_in_entry(payload: bytes) -> int:
    """Events in one stream entry: a msgpack array of Events, or (older format) one Event."""
    try:
        items = _split(payload)
    except msgspec.DecodeError:
        return 1 if payload else 0
    # An Event is itself an array (array_like); a batch is an array of arrays.
    if items and bytes(items[0])[:1] and bytes(items[0])[0] in _ARRAY_HEADS:
        return len(items)
    return 1


class EventStreams:
    """The edge's streams under the bench's own prefix: counted and emptied between runs.

    `entries` is what XLEN would have summed to; `events` counts the events inside them.
    """

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.prefix = prefix
        self.entries = 0
        self.events = 0

    def _streams(self) -> list[bytes]:
        return list(self.client.scan_iter(match=f"{self.prefix}:events:*", count=1000))

    def length(self) -> int:
        streams = self._streams()
        if not streams:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for stream in streams:
            pipe.xlen(stream)
        return sum(pipe.execute())

    def settle(self, timeout: float = 5.0) -> int:
        """Wait until the edge's buffered batches have landed (the length stops moving)."""
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            now = self.length()
            if now == last:
                return now
            last = now
            time.sleep(0.2)
        return last

    def count_and_trim(self) -> int:
        """Count the events the streams hold into `events` (and `entries`), then delete those entries.

        Keeps Redis memory (and the edge's stream-length bound) small over a long run.
        Returns the number of events taken.
        """
        self.settle()
        taken = 0
        for stream in self._streams():
            while True:
                chunk = self.client.xrange(stream, "-", "+", count=1000)
                if not chunk:
                    break
                for _, fields in chunk:
                    taken += events_in_entry(fields.get(ENTRY_FIELD, b""))
                self.entries += len(chunk)
                self.client.xdel(stream, *(entry_id for entry_id, _ in chunk))
        self.events += taken
        return taken

    def delete_all(self) -> int:
        """Delete every key under the prefix (streams, link-table copies); return how many."""
        keys = list(self.client.scan_iter(match=f"{self.prefix}:*", count=1000))
        if keys:
            self.client.delete(*keys)
        return len(keys)

    def close(self) -> None:
        self.client.close()


# -- nginx --------------------------------------------------------------------------------

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=2048;
        location / {{ empty_gif; }}
    }}
}}
"""


def ensure_tools(install: bool) -> None:
    """wrk and nginx on PATH, installed with apt-get when missing and allowed; else a clear error."""
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if not missing:
        return
    if not install:
        raise RuntimeError(
            f"missing {', '.join(missing)}; install with: apt-get update && apt-get install -y nginx-light wrk"
        )
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"missing {', '.join(missing)} and no apt-get to install them; install nginx and wrk")
    print(f"bench: installing {', '.join(missing)} with apt-get (nginx-light wrk)...", flush=True)
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "nginx-light", "wrk"]):
        done = subprocess.run(argv, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(
                f"could not install nginx-light and wrk ({' '.join(argv)} exited {done.returncode}; "
                f"are you root with network access?):\n{done.stderr[-2000:]}"
            )
    still = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if still:
        raise RuntimeError(f"apt-get install finished but {', '.join(still)} is still not on PATH")


def nginx_config(folder: Path, port: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "nginx.conf"
    path.write_text(NGINX_CONF.format(dir=folder, port=port))
    return path


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "?"

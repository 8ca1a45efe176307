"""Heartbeats of the stream consumers, and the liveness probe that reads them (`flusher --check`, `hooks --check`).

A heartbeat is one key per process holding its facts (a Struct of
tracker.contract.snapshots, as JSON) with a TTL, rewritten every third of the
TTL: it disappears on its own when the process dies, and a clean exit deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from tracker.contract.exits import EXIT_FAILED, EXIT_OK
from tracker.contract.snapshots import encode
from tracker.streams.retry import REDIS_TRANSIENT

_log = logging.getLogger("tracker.streams")


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Heartbeat:
    """Writes `facts()` to `key` with a TTL of `ttl_s`; `also(pipe)` adds commands to the same round trip."""

    def __init__(self, redis: Redis, key: str, ttl_s: int, facts: Callable[[], msgspec.Struct], *,
                 also: Callable[[Pipeline], None] | None = None, log: logging.Logger = _log) -> None:  # fmt: skip
        self.redis = redis
        self.key = key
        self.ttl_s = ttl_s
        self.facts = facts
        self.also = also
        self.log = log

    async def beat(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.key, encode(self.facts()), ex=self.ttl_s)
            if self.also is not None:
                self.also(pipe)
            await pipe.execute()

    async def run(self) -> None:
        """Beat every third of the TTL until cancelled; a failed beat is logged (debug) and the next one tries."""
        while True:
            try:
                await self.beat()
            except REDIS_TRANSIENT as exc:
                self.log.debug("heartbeat failed: %r", exc)
            await asyncio.sleep(self.ttl_s / 3)

    async def forget(self, *also_keys: str) -> None:
        """Delete the heartbeat (and `also_keys`) at a clean exit; an unreachable Redis lets the TTL do it."""
        with contextlib.suppress(*REDIS_TRANSIENT):
            await self.redis.delete(self.key, *also_keys)


async def check_heartbeat(redis_url: str, key: Callable[[str], str], consumer: str, program: str) -> int:
    """EXIT_OK if the consumer's heartbeat key is live (any consumer on this host when no name is given)."""
    client = Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        if consumer:
            alive = await client.exists(key(consumer))
        else:
            alive = any([k async for k in client.scan_iter(match=key(f"{socket.gethostname()}-*"), count=1000)])
    except Exception as exc:
        print(f"{program}: no heartbeat: Redis unreachable ({exc!r})", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await client.aclose()
    return EXIT_OK if alive else EXIT_FAILED

"""Heartbeats of the stream consumers, and the liveness probe that reads them (`flusher --check`, `hooks --check`).

A heartbeat is one key per process holding its facts (a Struct of
tracker.contract.snapshots, as JSON) with a TTL, rewritten every third of the
TTL: it disappears on its own when the process dies, and a clean exit deletes it.

It follows progress, not just the process being there: given a `stalled_for()`
(see `Progress`), the key expires a TTL after the last progress made while work
was in hand, and is not written again until work moves; so `--check` fails for
a process that is up but stuck (a database refusing connections, a Redis that
refuses every write). With nothing in hand it beats as usual. When Redis is at
maxmemory (SET refused), the existing key is kept alive with PEXPIRE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import NoBackoff

from tracker.contract.exits import EXIT_FAILED, EXIT_OK
from tracker.contract.snapshots import encode
from tracker.streams.cluster import plain_client
from tracker.streams.retry import Outage, error_text, is_out_of_memory
from tracker.streams.tasks import bounded

_log = logging.getLogger("tracker.streams")


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Progress:
    """Work in hand and when it last moved: what a heartbeat follows.

    `took()` when work is taken in hand (a batch read, an entry to deliver),
    `moved()` when some of it got on (a commit), `done()` when it is finished or
    given back. `stalled_for()`: seconds since the last move while work is in
    hand, 0 with nothing in hand. `idle()`: a wait that is not a stall (a backoff
    the destination asked for), during which nothing counts as in hand.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.in_hand = 0
        self.moved_at = clock()

    def took(self, count: int = 1) -> None:
        if self.in_hand <= 0:
            self.moved_at = self.clock()  # from idle to busy: the clock starts now
        self.in_hand += count

    def moved(self) -> None:
        self.moved_at = self.clock()

    def done(self, count: int = 1) -> None:
        self.in_hand = max(0, self.in_hand - count)
        self.moved_at = self.clock()

    def stalled_for(self) -> float:
        return max(0.0, self.clock() - self.moved_at) if self.in_hand > 0 else 0.0

    @contextlib.contextmanager
    def idle(self) -> Iterator[None]:
        held, self.in_hand = self.in_hand, 0
        try:
            yield
        finally:
            self.in_hand += held
            self.moved_at = self.clock()


def most_stalled(progresses: Iterable[Progress]) -> float:
    return max((progress.stalled_for() for progress in progresses), default=0.0)


class Heartbeat:
    """Writes `facts()` to `key` with a TTL of `ttl_s`; `also(pipe)` adds commands to the same round trip.

    `stalled_for()`: seconds the work in hand has not moved (`Progress.stalled_for`); the key
    then expires a TTL after the last move and is not written again until work moves.
    `keep`: keys `also` writes with the same TTL, kept alive with the heartbeat when Redis is full.
    """

    def __init__(self, redis: Redis, key: str, ttl_s: int, facts: Callable[[], msgspec.Struct], *,
                 also: Callable[[Pipeline], None] | None = None, keep: tuple[str, ...] = (),
                 stalled_for: Callable[[], float] | None = None, log: logging.Logger = _log) -> None:  # fmt: skip
        self.redis = redis
        self.key = key
        self.ttl_s = ttl_s
        self.facts = facts
        self.also = also
        self.keep = keep
        self.stalled_for = stalled_for
        self.log = log
        self.withdrawn = False
        self._outage = Outage(log, "heartbeat")

    async def beat(self) -> bool:
        """Write the heartbeat; False when it is withheld (work in hand has not moved for a whole TTL)."""
        stalled = self.stalled_for() if self.stalled_for is not None else 0.0
        left_ms = int((self.ttl_s - stalled) * 1000)
        if left_ms <= 0:
            if not self.withdrawn:
                self.withdrawn = True
                self.log.warning("no progress for %.0fs with work in hand: heartbeat withdrawn (--check fails) "
                                 "until work moves again", stalled)  # fmt: skip
        elif self.withdrawn:
            self.withdrawn = False
            self.log.info("work moves again: heartbeat back")
        async with self.redis.pipeline(transaction=False) as pipe:
            if self.withdrawn:
                pipe.delete(self.key)
            else:
                # Work in hand: the key lives until a TTL after its last move, not a TTL after now.
                pipe.set(self.key, encode(self.facts()), px=left_ms)
            if self.also is not None:
                self.also(pipe)
            replies = await pipe.execute(raise_on_error=False)
        errors = [reply for reply in replies if isinstance(reply, Exception)]
        if errors and all(is_out_of_memory(error) for error in errors):
            # Redis is at maxmemory: SET is refused, PEXPIRE is not. The facts get stale; liveness holds.
            async with self.redis.pipeline(transaction=False) as pipe:
                if not self.withdrawn:
                    pipe.pexpire(self.key, left_ms)
                for key in self.keep:
                    pipe.pexpire(key, self.ttl_s * 1000)
                await pipe.execute()
        elif errors:
            raise errors[0]
        return not self.withdrawn

    async def run(self) -> None:
        """Beat every third of the TTL until cancelled; failures are logged once per outage and the next beat tries."""
        while True:
            try:
                await self.beat()
            except Exception as exc:  # Redis away, or anything else: the probe says so by failing
                self._outage.failed(exc, "the next beat tries again")
            else:
                self._outage.recovered()
            pause = self.ttl_s / 3
            if self.stalled_for is not None and 0 < (left := self.ttl_s - self.stalled_for()) < pause:
                pause = left + 0.01  # at the lapse, to say so when it happens
            await asyncio.sleep(pause)

    async def forget(self, *also_keys: str, timeout_s: float = 2.0) -> None:
        """Delete the heartbeat (and `also_keys`) at a clean exit; an unreachable Redis lets the TTL do it."""
        with contextlib.suppress(Exception):
            await bounded(self.redis.delete(self.key, *also_keys), timeout_s)


async def check_heartbeat(
    redis_url: str, key: Callable[[str], str], consumer: str, program: str, cluster: bool = False
) -> int:
    """EXIT_OK if the consumer's heartbeat key is live (any consumer on this host when no name is given)."""
    client = plain_client(redis_url, cluster, socket_timeout=2, socket_connect_timeout=2,
                          retry=RedisRetry(NoBackoff(), 1))  # fmt: skip
    try:
        if consumer:
            alive = await client.exists(key(consumer))
        else:
            alive = any([k async for k in client.scan_iter(match=key(f"{socket.gethostname()}-*"), count=1000)])
    except Exception as exc:
        print(f"{program}: no heartbeat: Redis unreachable ({error_text(exc)})", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await client.aclose()
    return EXIT_OK if alive else EXIT_FAILED

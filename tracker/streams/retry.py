"""The one policy every loop of the flusher and forwarder retries with, and the transient error tuples.

Which failures are operational, fatal or other is tracker.streams.failures'
(re-exported here). A `Retry` runs an operation until it succeeds. An
operational failure is waited out with a pause doubling from `min_s` up to
`max_s` (optionally jittered to 50-100% of it) and logged once per change of
state, never once per try (`Outage`): one WARNING at the first failure, a
reminder at most once a minute, one INFO at the recovery with how long it
lasted and how many tries it took. A NOGROUP reply, when the policy knows how
to make the groups again, makes them and tries again at once. While the
program is closing (`closing()` returns the seconds since it began to), the
policy keeps trying only within `grace_s` of that moment, then raises
`Stopping`: the work in hand stays pending in its consumer group, for this
consumer's restart or another's reclaim.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import RedisError

from tracker.streams.failures import (
    ANY_TRANSIENT,
    FATAL,
    POSTGRES_FATAL,
    POSTGRES_TRANSIENT,
    REDIS_FATAL,
    REDIS_TRANSIENT,
    Errors,
    classify,
    describe,
    during,
    error_text,
    fatal_hint,
    is_fatal,
    is_nogroup,
    is_operational,
    is_out_of_memory,
    note_during,
)

__all__ = [
    "ANY_TRANSIENT", "FATAL", "POSTGRES_FATAL", "POSTGRES_TRANSIENT", "REDIS_FATAL", "REDIS_TRANSIENT",
    "REMIND_EVERY_S", "Errors", "Outage", "Retry", "Stopping", "classify", "describe", "during", "error_text",
    "fatal_hint", "is_fatal", "is_nogroup", "is_operational", "is_out_of_memory",
]  # fmt: skip

REMIND_EVERY_S = 60.0
T = TypeVar("T")
_log = logging.getLogger("tracker.streams")


class Stopping(Exception):
    """The program is closing (and its grace, if any, is over) while an operation still fails: leave it pending."""


class Outage:
    """One operation's run of failures, logged once per change of state rather than once per try.

    `failed(exc)`: the first failure logs one WARNING naming the operation and the
    error and saying it is retried; later ones log DEBUG, plus a WARNING reminder
    at most every `remind_s`. `recovered()`: one INFO with how long it lasted and
    how many tries it took (the successful one included); nothing if it never failed.
    """

    def __init__(self, log: logging.Logger, what: str, prefix: str = "", *, remind_s: float = REMIND_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.log = log
        self.what = what
        self.prefix = prefix
        self.remind_s = remind_s
        self.clock = clock
        self.since: float | None = None
        self.failures = 0
        self._reminded = 0.0

    @property
    def failing(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException, retrying: str = "retrying with backoff") -> None:
        now = self.clock()
        self.failures += 1
        if self.since is None:
            self.since = self._reminded = now
            self.log.warning("%s%s failed: %s; %s, logging again when it recovers", self.prefix, self.what,
                             error_text(exc), retrying)  # fmt: skip
        elif now - self._reminded >= self.remind_s:
            self._reminded = now
            self.log.warning("%s%s still failing after %.0fs and %d tries: %s", self.prefix, self.what,
                             now - self.since, self.failures, error_text(exc))  # fmt: skip
        else:
            self.log.debug("%s%s failed again (%d): %s", self.prefix, self.what, self.failures, error_text(exc))

    def recovered(self) -> None:
        if self.since is None:
            return
        self.log.info("%s%s recovered after %.1fs and %d tries", self.prefix, self.what, self.clock() - self.since,
                      self.failures + 1)  # fmt: skip
        self.since = None
        self.failures = 0


class Retry:
    """Retry with doubling pauses between `min_s` and `max_s`; see the module's docstring.

    `closing`: seconds since the program began closing, None while it is not.
    `regroup`: makes the consumer groups again; given, a NOGROUP reply makes them and tries again at once.
    `sleep`: how to wait (a runner passes one that a state change cuts short).
    `prefix`: put before what is logged, e.g. "hook 3: ".
    `probe`: asks Redis whether it answers (e.g. `redis.ping`); given, a pause after a Redis failure asks it
    every `probe_every_s` and ends as soon as it does, so a Redis that comes back is used at once rather than
    after a backoff grown during the outage.
    """

    def __init__(
        self,
        min_s: float,
        max_s: float,
        *,
        jitter: bool = False,
        log: logging.Logger = _log,
        prefix: str = "",
        closing: Callable[[], float | None] | None = None,
        grace_s: float = 0.0,
        regroup: Callable[[], Awaitable[None]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        probe: Callable[[], Awaitable[Any]] | None = None,
        probe_every_s: float = 0.5,
    ) -> None:
        self.min_s = min_s
        self.max_s = max(min_s, max_s)
        self.jitter = jitter
        self.log = log
        self.prefix = prefix
        self.closing = closing
        self.grace_s = grace_s
        self.regroup = regroup
        self.sleep = sleep
        self.probe = probe
        self.probe_every_s = probe_every_s

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Pause after the `attempt`-th failure in a row: min * 2**(attempt-1) up to max, then 50-100% if jittered."""
        base = min(self.max_s, self.min_s * 2.0 ** min(max(0, attempt - 1), 64))  # (no overflow after days)
        return base * (0.5 + 0.5 * rng()) if self.jitter else base

    async def run(
        self,
        what: str,
        operation: Callable[[], Awaitable[T]],
        transient: Errors = REDIS_TRANSIENT,
        on_failure: Callable[[], Any] | None = None,
    ) -> T:
        """`operation()`'s result, after as many tries as its operational failures take.

        `on_failure()` runs after each failure (it may return an awaitable, e.g. to make room before the next try;
        its own operational failures are ignored). A failure that is not operational is raised, with a note
        naming `what` (see `during`).
        """
        outage = Outage(self.log, what, self.prefix)
        attempt = 0
        regrouped = False
        while True:
            try:
                result = await operation()
            except Exception as exc:
                nogroup = self.regroup is not None and is_nogroup(exc)
                if not (nogroup or is_operational(exc, transient)):
                    note_during(exc, f"{self.prefix}{what}")
                    raise
                failure: BaseException = exc
            else:
                outage.recovered()
                return result
            if nogroup and not regrouped:
                # Redis lost the groups (restarted without persistence): make them again and try at once.
                assert self.regroup is not None
                try:
                    await self.regroup()
                except Exception as exc:
                    if not is_operational(exc):
                        note_during(exc, f"{self.prefix}{what}: make the consumer groups again")
                        raise
                    failure = exc
                else:
                    regrouped = True
                    self.log.warning("%s%s: the consumer group was gone (Redis lost it?); made it again",
                                     self.prefix, what)  # fmt: skip
                    continue
            regrouped = False
            if on_failure is not None:
                await _quietly(on_failure)
            attempt += 1
            delay = self._within_grace(what, failure, self.delay(attempt))
            outage.failed(failure)
            if self.probe is not None and isinstance(failure, RedisError) and delay > self.probe_every_s:
                await self._pause_until_redis_answers(delay)
            else:
                await self.sleep(delay)

    async def _pause_until_redis_answers(self, delay: float) -> None:
        assert self.probe is not None
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            await self.sleep(min(left, self.probe_every_s))
            try:
                async with asyncio.timeout(self.probe_every_s):
                    await self.probe()
            except Exception:  # still away (or loading): keep pausing
                continue
            return

    def _within_grace(self, what: str, failure: BaseException, delay: float) -> float:
        """The delay, shortened to what is left of the grace while closing; `Stopping` once none is left."""
        closed_for = self.closing() if self.closing is not None else None
        if closed_for is None:
            return delay
        left = self.grace_s - closed_for
        if left <= 0:
            level = logging.ERROR if self.grace_s > 0 else logging.WARNING
            self.log.log(level, "%s%s failed (%s) and the shutdown grace is over: leaving it pending",
                         self.prefix, what, error_text(failure))  # fmt: skip
            raise Stopping(what) from failure
        return min(delay, left)


async def _quietly(callback: Callable[[], Any]) -> None:
    try:
        result = callback()
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        if not is_operational(exc):
            raise
        _log.debug("between tries: %s", error_text(exc))

"""Which failures are worth retrying, and the one policy every loop of the flusher and forwarder retries with.

A `Retry` runs an operation until it succeeds. A failure in `transient` (or a
NOGROUP reply, when the policy knows how to make the groups again) is logged
with the number of the next try and its delay, then waited out: the delay
doubles from `min_s` up to `max_s`, optionally with jitter (50-100% of it).
Any other exception is raised at once. While the program is closing
(`closing()` returns the seconds since it began to), the policy keeps trying
only within `grace_s` of that moment, then raises `Stopping`: the work in hand
stays pending in its consumer group, for this consumer's restart or another's
reclaim. Every retry loop goes through `Retry.run`, so what counts as passing
and how it is logged is decided here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from redis.exceptions import BusyLoadingError, ConnectionError, ResponseError, TimeoutError

# Failures of the transport or of a server that is going away or coming up:
# the same work will succeed later, so it is retried as it is.
REDIS_TRANSIENT = (ConnectionError, TimeoutError, BusyLoadingError, OSError)
POSTGRES_TRANSIENT = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # The client lost track of the protocol state (a server gone mid-operation); a new connection cures it.
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    # Two flushers racing for the same rows: the loser's transaction is rolled back whole.
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.LockNotAvailableError,
    asyncpg.QueryCanceledError,
)
ANY_TRANSIENT = (*REDIS_TRANSIENT, *POSTGRES_TRANSIENT)

T = TypeVar("T")
Errors = tuple[type[BaseException], ...]
_log = logging.getLogger("tracker.streams")


class Stopping(Exception):
    """The program is closing (and its grace, if any, is over) while an operation still fails: leave it pending."""


def is_nogroup(exc: BaseException) -> bool:
    """A reply saying the consumer group (or its stream) is gone, e.g. after Redis restarted without persistence."""
    return isinstance(exc, ResponseError) and "NOGROUP" in str(exc)


class Retry:
    """Retry with doubling pauses between `min_s` and `max_s`; see the module's docstring.

    `closing`: seconds since the program began closing, None while it is not.
    `regroup`: makes the consumer groups again; given, a NOGROUP reply is retried after calling it.
    `sleep`: how to wait (a runner passes one that a state change cuts short).
    `prefix`: put before what is logged, e.g. "hook 3: ".
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

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Pause after the `attempt`-th failure in a row: min * 2**(attempt-1) up to max, then 50-100% if jittered."""
        base = min(self.max_s, self.min_s * 2 ** max(0, attempt - 1))
        return base * (0.5 + 0.5 * rng()) if self.jitter else base

    async def run(
        self,
        what: str,
        operation: Callable[[], Awaitable[T]],
        transient: Errors = REDIS_TRANSIENT,
        on_failure: Callable[[], None] | None = None,
    ) -> T:
        """`operation()`'s result, after as many tries as its passing failures take."""
        attempt = 0
        while True:
            try:
                return await operation()
            except transient as exc:
                failure: BaseException = exc
            except ResponseError as exc:
                if self.regroup is None or not is_nogroup(exc):
                    raise
                failure = exc
            if self.regroup is not None and is_nogroup(failure):
                # Redis lost the groups (restarted without persistence): make them again.
                with contextlib.suppress(*REDIS_TRANSIENT, ResponseError):
                    await self.regroup()
            if on_failure is not None:
                on_failure()
            attempt += 1
            delay = self._within_grace(what, failure, self.delay(attempt))
            self.log.warning("%s%s failed: %r; try %d in %.2fs", self.prefix, what, failure, attempt + 1, delay)
            await self.sleep(delay)

    def _within_grace(self, what: str, failure: BaseException, delay: float) -> float:
        """The delay, shortened to what is left of the grace while closing; `Stopping` once none is left."""
        closed_for = self.closing() if self.closing is not None else None
        if closed_for is None:
            return delay
        left = self.grace_s - closed_for
        if left <= 0:
            level = logging.ERROR if self.grace_s > 0 else logging.WARNING
            self.log.log(level, "%s%s failed (%r) and the shutdown grace is over: leaving it pending",
                         self.prefix, what, failure)  # fmt: skip
            raise Stopping(what) from failure
        return min(delay, left)

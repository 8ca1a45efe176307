"""Which failures are worth retrying, and the pause before the next try."""

from __future__ import annotations

import asyncpg
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

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


class Backoff:
    """Doubling pauses between `low` and `high`; `reset()` after a success."""

    __slots__ = ("attempt", "high", "low")

    def __init__(self, low: float, high: float) -> None:
        self.low = low
        self.high = max(low, high)
        self.attempt = 0

    def next_delay(self) -> float:
        self.attempt += 1
        return min(self.high, self.low * 2 ** (self.attempt - 1))

    def reset(self) -> None:
        self.attempt = 0

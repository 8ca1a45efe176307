"""Which failures are worth retrying, which end the program, and how one is told in a line.

Failures fall in three kinds (`classify`):

    operational  the server is away, full, read-only, not accepting connections
                 or too busy; the same work succeeds later, so it is retried as
                 it is (Redis: refused or dropped connections, timeouts, LOADING,
                 OOM, READONLY, MASTERDOWN; Postgres: connection errors, `cannot
                 connect now`, read-only transactions, a database not accepting
                 connections, too many connections, shutdowns, deadlocks)
    fatal        retrying cannot help: bad credentials, a database that does not
                 exist, a schema that is missing; the program exits non-zero
    other        anything else (a bug, a refused value): raised to the caller

tracker.streams.retry re-exports all of it: import from there.
"""

from __future__ import annotations

import re

import asyncpg
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    AuthorizationError,
    BusyLoadingError,
    ConnectionError,
    MasterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from tracker.streams.cluster import ClusterRefused

# Failures of the transport or of a server that is going away, coming up, full or read-only:
# the same work will succeed later, so it is retried as it is.
REDIS_TRANSIENT = (ConnectionError, TimeoutError, BusyLoadingError, OutOfMemoryError, ReadOnlyError, MasterDownError,
                   TryAgainError, OSError)  # fmt: skip
POSTGRES_TRANSIENT = (
    OSError,  # refused, reset, unreachable; asyncio's TimeoutError is one too
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # The client lost track of the protocol state (a server gone mid-operation); a new connection cures it.
    asyncpg.InternalClientError,
    # Shutdowns, `cannot connect now`, sessions ended by an administrator, cancelled statements.
    asyncpg.OperatorInterventionError,
    # Too many connections, out of memory or disk on the server.
    asyncpg.InsufficientResourcesError,
    # A database made read-only (default_transaction_read_only): the caller drops the connection, and
    # the next one picks up the default again.
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.IdleInTransactionSessionTimeoutError,
    # 55000, e.g. `database "x" is not currently accepting connections` (ALLOW_CONNECTIONS false); also
    # lock_timeout (LockNotAvailableError), which the maintenance tells apart itself.
    asyncpg.ObjectNotInPrerequisiteStateError,
    # Two flushers racing for the same rows: the loser's transaction is rolled back whole.
    asyncpg.TransactionRollbackError,
    asyncpg.PostgresSystemError,
)
ANY_TRANSIENT = (*REDIS_TRANSIENT, *POSTGRES_TRANSIENT)

# Retrying cannot help: the program stops with one line saying why.
# ClusterRefused: TRACKER_REDIS_CLUSTER=1 aimed at a single Redis, or a cluster missing slots at start.
REDIS_FATAL = (AuthenticationError, AuthorizationError, AuthenticationWrongNumberOfArgsError, NoPermissionError,
               ClusterRefused)  # fmt: skip
POSTGRES_FATAL = (
    asyncpg.InvalidAuthorizationSpecificationError,  # bad password (InvalidPasswordError), unknown role, pg_hba
    asyncpg.InvalidCatalogNameError,  # the database does not exist
    asyncpg.InvalidSchemaNameError,
    asyncpg.UndefinedTableError,  # the schema is missing (not migrated)
    asyncpg.UndefinedColumnError,
    asyncpg.UndefinedFunctionError,
    asyncpg.UndefinedObjectError,
    asyncpg.InsufficientPrivilegeError,
)
FATAL = (*REDIS_FATAL, *POSTGRES_FATAL)

# A Redis reply refusing the command for the server's state, also when a script relays it ("... -OOM ...").
_OPERATIONAL_REPLY = re.compile(r"(?:^|[\s\-])(OOM|READONLY|LOADING|MASTERDOWN|TRYAGAIN|BUSY)\s")
_PIPELINE_COMMAND = re.compile(r"Command # (\d+) \((\w+)\b.*\) of pipeline caused error: ", re.DOTALL)
_MESSAGE_MAX = 500

Errors = tuple[type[BaseException], ...]


def is_fatal(exc: BaseException) -> bool:
    """Bad credentials, no such database, a missing schema: retrying cannot help."""
    return isinstance(exc, FATAL)


def is_out_of_memory(exc: BaseException) -> bool:
    """Redis refused a command because it is at maxmemory (directly, or relayed by a script)."""
    if isinstance(exc, OutOfMemoryError):
        return True
    match = _OPERATIONAL_REPLY.search(str(exc)) if isinstance(exc, ResponseError) else None
    return match is not None and match.group(1) == "OOM"


def is_operational(exc: BaseException, transient: Errors = ANY_TRANSIENT) -> bool:
    """Worth retrying as it is: one of `transient`, or a Redis reply refusing for the server's state; never fatal."""
    if is_fatal(exc):
        return False
    if isinstance(exc, transient):
        return True
    return isinstance(exc, ResponseError) and _OPERATIONAL_REPLY.search(str(exc)) is not None


def classify(exc: BaseException) -> str:
    """"operational", "fatal" or "other" (see the module's docstring)."""
    return "fatal" if is_fatal(exc) else "operational" if is_operational(exc) else "other"


def is_nogroup(exc: BaseException) -> bool:
    """A reply saying the consumer group (or its stream) is gone, e.g. after Redis restarted without persistence."""
    return isinstance(exc, ResponseError) and "NOGROUP" in str(exc)


def during(exc: BaseException) -> str:
    """What the program was doing when `exc` was raised through a `Retry` ("" when not known)."""
    for note in getattr(exc, "__notes__", ()):
        if note.startswith("during: "):
            return note[len("during: "):]
    return ""


def error_text(exc: BaseException) -> str:
    """The error's type and message on one line (redis-py's repr leaves the message out; its pipeline errors
    quote the whole command, binary payload included: only the command's name is kept)."""
    message = _PIPELINE_COMMAND.sub(r"command #\1 (\2) of a pipeline: ", " ".join(str(exc).split()))
    if len(message) > _MESSAGE_MAX:
        message = message[:_MESSAGE_MAX] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def describe(exc: BaseException) -> str:
    """One line: the operation (when a `Retry` noted it), the error's type and message."""
    what = during(exc)
    return f"{what + ': ' if what else ''}{error_text(exc)}"


def fatal_hint(exc: BaseException) -> str:
    """What an operator should look at for a fatal error."""
    if isinstance(exc, ClusterRefused):
        return "TRACKER_REDIS_CLUSTER=1 needs a cluster serving every hash slot: check REDIS_URL's nodes, or unset it"
    if isinstance(exc, REDIS_FATAL):
        return "check the credentials and permissions in REDIS_URL"
    if isinstance(exc, (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InsufficientPrivilegeError)):
        return "check the user, password and privileges in DATABASE_URL"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return "check the database name in DATABASE_URL"
    if isinstance(exc, POSTGRES_FATAL):
        return "is the schema migrated? `flusher --migrate` applies the migrations"
    return "retrying cannot help"


def note_during(exc: BaseException, what: str) -> None:
    if not during(exc):
        exc.add_note(f"during: {what}")

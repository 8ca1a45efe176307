"""tracker.streams: the consumer-group reader both stream consumers use, and the one retry policy."""

from __future__ import annotations

import asyncio
import builtins
import logging
import time

import asyncpg
import msgspec
import pytest
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ConnectionError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
)

from tracker.contract.snapshots import FlusherHeartbeatFacts, FlusherMetricsSnapshot, decode, encode
from tracker.streams.consumer import GroupConsumer, as_text, field_value, open_redis
from tracker.streams.heartbeat import Heartbeat, Progress
from tracker.streams.retry import (
    POSTGRES_TRANSIENT,
    REDIS_TRANSIENT,
    Outage,
    Retry,
    Stopping,
    classify,
    describe,
    is_operational,
    is_out_of_memory,
)
from tracker.streams.tasks import TimedOut, bounded, stop_tasks


@pytest.fixture
async def raw_redis(redis_url):
    client = open_redis(redis_url, timeout_s=10, connect_timeout_s=2)
    try:
        yield client
    finally:
        await client.aclose()


def reader(client, streams, consumer, claim_idle_ms=60_000) -> GroupConsumer:
    return GroupConsumer(client, streams, "g", consumer, claim_idle_ms=claim_idle_ms)


async def past_own_pending(consumer: GroupConsumer) -> GroupConsumer:
    """A new consumer name's first read finds nothing of its own pending; after it, reads bring new entries."""
    assert await consumer.read(100) == [] and consumer.own_pending_done
    return consumer


def ids(found) -> list[bytes]:
    return [entry_id for _stream, entries in found for entry_id, _fields in entries]


async def add(redis, stream: str, n: int) -> list[bytes]:
    return [await redis.xadd(stream, {b"e": f"payload-{i}".encode()}) for i in range(n)]


# -- the reader -------------------------------------------------------------------------------


async def test_a_restarted_consumer_reads_its_own_pending_entries_first_stream_by_stream(raw_redis, redis, key_prefix):
    streams = [f"{key_prefix}:s:{{0}}", f"{key_prefix}:s:{{1}}"]
    first = reader(raw_redis, streams, "worker-a")
    await first.ensure_groups()
    await first.ensure_groups()  # safe to repeat
    a, b = await add(redis, streams[0], 5), await add(redis, streams[1], 2)
    assert await first.read(100) == [] and first.own_pending_done  # a new name has nothing pending
    assert sorted(ids(await first.read(100))) == sorted(a + b)  # delivered, never acknowledged: "worker-a" died
    await redis.xdel(streams[0], a[1])  # deleted while pending
    newer = await add(redis, streams[1], 1)

    again = reader(raw_redis, streams, "worker-a")  # the same name after a restart
    assert not again.own_pending_done
    pages = [await again.read(2, block_ms=50) for _ in range(3)]
    # Own pending entries first, each stream from its own cursor, in pages of COUNT per stream.
    assert [ids(page) for page in pages] == [[a[0], a[1], *b], [a[2], a[3]], [a[4]]]
    first_page = dict(pages[0])
    assert first_page[streams[0]][1] == [a[1], None]  # deleted: nothing to read, only to acknowledge
    assert field_value(first_page[streams[0]][0][1], b"e") == b"payload-0"
    assert field_value(None, b"e") is None and field_value([b"x", b"1"], b"e") is None
    assert not again.own_pending_done
    assert await again.read(10, block_ms=50) == [] and again.own_pending_done
    assert ids(await again.read(10, block_ms=50)) == newer  # then new entries

    await again.acknowledge({streams[0]: a, streams[1]: [*b, *newer]})
    assert all([(await redis.xpending(s, "g"))["pending"] == 0 for s in streams])
    again.reread_own_pending()
    assert not again.own_pending_done and await again.read(10) == [] and again.own_pending_done


async def test_entries_idle_in_another_consumer_are_reclaimed_page_by_page(raw_redis, redis, key_prefix):
    streams = [f"{key_prefix}:s:{{0}}", f"{key_prefix}:s:{{1}}"]
    dead = reader(raw_redis, streams, "dead-one")
    await dead.ensure_groups()
    added = await add(redis, streams[0], 7) + await add(redis, streams[1], 3)
    await past_own_pending(dead)
    assert len(ids(await dead.read(100))) == 10
    fresh = reader(raw_redis, streams, "survivor", claim_idle_ms=600_000)
    assert await fresh.reclaim(100) == []  # not idle long enough yet
    await asyncio.sleep(0.05)

    survivor = reader(raw_redis, streams, "survivor", claim_idle_ms=20)
    claimed: set[bytes] = set()
    for _ in range(20):
        page = ids(await survivor.reclaim(4))
        assert len(page) <= 4  # a call stops once `count` entries are in hand
        claimed |= set(page)
        if claimed == set(added):
            break
    assert claimed == set(added)  # each stream's cursor followed across calls
    consumers = {as_text(c["name"]): c["pending"] for c in await redis.xinfo_consumers(streams[0], "g")}
    assert consumers == {"dead-one": 0, "survivor": 7}


async def test_a_stream_is_trimmed_only_up_to_what_every_group_still_needs(raw_redis, redis, key_prefix):
    stream = f"{key_prefix}:s:{{0}}"
    ours = reader(raw_redis, [stream], "us")
    other = GroupConsumer(raw_redis, [stream], "other", "them", claim_idle_ms=60_000)  # say, an action hook's
    await ours.ensure_groups()
    await other.ensure_groups()
    added = await add(redis, stream, 10)
    await past_own_pending(ours)
    await past_own_pending(other)
    assert ids(await ours.read(100)) == added
    await ours.acknowledge({stream: added})  # all done in our group
    assert ids(await other.read(4)) == added[:4]
    await other.acknowledge({stream: added[:2]})  # the other group has 4 in hand and acknowledged 2

    assert await ours.trim([stream]) == 2
    assert [entry_id for entry_id, _ in await redis.xrange(stream)] == added[2:]  # its oldest pending one stays
    await other.acknowledge({stream: added[2:4]})
    assert await ours.trim([stream]) == 2
    # Nothing pending in "other": up to its last delivered entry goes, what it was never given stays.
    assert [entry_id for entry_id, _ in await redis.xrange(stream)] == added[4:]
    assert await ours.trim([f"{key_prefix}:no-such-stream"]) == 0


async def test_acknowledging_in_a_transaction_runs_the_callers_commands_with_the_acks(raw_redis, redis, key_prefix):
    stream, letters = f"{key_prefix}:s:{{0}}", f"{key_prefix}:dead"
    consumer = reader(raw_redis, [stream], "us")
    await consumer.ensure_groups()
    await add(redis, stream, 3)
    found = dict(await (await past_own_pending(consumer)).read(10))
    await consumer.acknowledge({stream: [entry_id for entry_id, _ in found[stream]]}, transaction=True,
                               before=lambda pipe: pipe.xadd(letters, {b"reason": b"bad"}))  # fmt: skip
    assert (await redis.xpending(stream, "g"))["pending"] == 0
    assert await redis.xlen(letters) == 1


# -- the retry policy ---------------------------------------------------------------------------


class Pauses:
    def __init__(self) -> None:
        self.taken: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.taken.append(seconds)


def failing(errors: list[BaseException], result: str = "done"):
    calls = []

    async def operation() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return operation, calls


async def test_a_transient_failure_is_retried_with_doubling_pauses_and_logged_once_per_change_of_state(caplog):
    caplog.set_level(logging.DEBUG, logger="tracker.streams")
    pauses = Pauses()
    retry = Retry(0.1, 0.3, sleep=pauses)
    errors: list[BaseException] = [ConnectionError("down"), TimeoutError(), OSError("reset"),
                                   OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
                                   ConnectionError("x")]  # fmt: skip
    operation, calls = failing(errors)
    dropped = []
    assert await retry.run("Redis: read", operation, REDIS_TRANSIENT, on_failure=lambda: dropped.append(1)) == "done"
    assert len(calls) == 6 and len(dropped) == 5
    assert pauses.taken == [0.1, 0.2, 0.3, 0.3, 0.3]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    # Five failures: one warning naming the operation and the error, one line at the recovery.
    assert warnings == ["Redis: read failed: ConnectionError: down; retrying with backoff, logging again when it "
                        "recovers"]  # fmt: skip
    assert len(infos) == 1 and infos[0].startswith("Redis: read recovered after ") and infos[0].endswith(" 6 tries")
    # An operation that never fails says nothing.
    caplog.clear()
    assert await retry.run("Redis: read", failing([])[0]) == "done"
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []


def test_a_long_outage_is_reminded_at_most_once_a_minute(caplog):
    caplog.set_level(logging.INFO, logger="t")
    now = [0.0]
    outage = Outage(logging.getLogger("t"), "Postgres: store a batch of 10", clock=lambda: now[0])
    outage.recovered()  # nothing failed: nothing to say
    for second in range(0, 150):
        now[0] = float(second)
        outage.failed(ConnectionRefusedError(111, "Connection refused"))
    now[0] = 151.0
    outage.recovered()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == ["WARNING", "WARNING", "WARNING", "INFO"]
    assert lines[0][1].startswith("Postgres: store a batch of 10 failed: ConnectionRefusedError: [Errno 111]")
    assert lines[1][1].startswith("Postgres: store a batch of 10 still failing after 60s and 61 tries")
    assert lines[3][1] == "Postgres: store a batch of 10 recovered after 151.0s and 151 tries"
    assert not outage.failing


def test_failures_are_operational_fatal_or_other():
    operational = [
        ConnectionError("refused"), TimeoutError(), BusyLoadingError("loading"), OutOfMemoryError("OOM"),
        ReadOnlyError("READONLY You can't write against a read only replica."), ConnectionResetError(),
        ResponseError("Error running script: @user_script:1: -OOM command not allowed when used memory"),
        ResponseError("MASTERDOWN Link with MASTER is down"), builtins.TimeoutError(),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.ObjectNotInPrerequisiteStateError('database "x" is not currently accepting connections'),
        asyncpg.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"), asyncpg.AdminShutdownError("bye"),
        asyncpg.ConnectionDoesNotExistError("closed"), asyncpg.DeadlockDetectedError("deadlock"),
        asyncpg.InterfaceError("connection is closed"), asyncpg.QueryCanceledError("statement timeout"),
    ]  # fmt: skip
    fatal = [
        asyncpg.InvalidPasswordError("password authentication failed"),
        asyncpg.InvalidAuthorizationSpecificationError('role "x" does not exist'),
        asyncpg.InvalidCatalogNameError('database "x" does not exist'),
        asyncpg.UndefinedTableError('relation "events" does not exist'),
        AuthenticationError("invalid username-password pair"), NoPermissionError("NOPERM"),
    ]  # fmt: skip
    other = [ValueError("a bug"), ResponseError("WRONGTYPE Operation against a key"), asyncpg.DataError("bad"),
             ResponseError("BUSYGROUP Consumer Group name already exists")]  # fmt: skip
    assert [classify(exc) for exc in operational] == ["operational"] * len(operational)
    assert [classify(exc) for exc in fatal] == ["fatal"] * len(fatal)
    assert [classify(exc) for exc in other] == ["other"] * len(other)
    # An authentication failure is a ConnectionError to redis-py: fatal all the same, never retried.
    assert not is_operational(AuthenticationError("x"), REDIS_TRANSIENT)
    assert is_out_of_memory(ResponseError("Error running script (call to f_1): @user_script:1: -OOM command not"))
    assert not is_out_of_memory(ResponseError("ERR no such key"))


async def test_a_fatal_failure_is_raised_at_once_with_what_was_being_done():
    pauses = Pauses()
    operation, calls = failing([asyncpg.UndefinedTableError('relation "events" does not exist')])
    with pytest.raises(asyncpg.UndefinedTableError) as raised:
        await Retry(0.1, 1.0, sleep=pauses, prefix="hook 3: ").run("Postgres: maintenance", operation,
                                                                    POSTGRES_TRANSIENT)  # fmt: skip
    assert len(calls) == 1 and pauses.taken == []
    expected = 'hook 3: Postgres: maintenance: UndefinedTableError: relation "events" does not exist'
    assert describe(raised.value) == expected
    operation, calls = failing([AuthenticationError("invalid username-password pair")])
    with pytest.raises(AuthenticationError):
        await Retry(0.1, 1.0, sleep=pauses).run("Redis: read", operation, REDIS_TRANSIENT)
    assert len(calls) == 1 and pauses.taken == []


async def test_a_failure_that_is_not_transient_is_raised_at_once():
    pauses = Pauses()
    operation, calls = failing([ValueError("a bug")])
    with pytest.raises(ValueError):
        await Retry(0.1, 1.0, sleep=pauses).run("x", operation, POSTGRES_TRANSIENT)
    operation, calls = failing([ResponseError("WRONGTYPE Operation against a key")])
    with pytest.raises(ResponseError):
        await Retry(0.1, 1.0, sleep=pauses, regroup=_never).run("x", operation)
    assert len(calls) == 1 and pauses.taken == []


async def _never() -> None:
    raise AssertionError("not a NOGROUP reply")


async def test_a_lost_group_is_made_again_then_the_operation_retried_at_once():
    made = []

    async def regroup() -> None:
        made.append(1)

    pauses = Pauses()
    operation, calls = failing([ResponseError("NOGROUP No such key 'x' or consumer group 'g'")])
    assert await Retry(5.0, 10.0, sleep=pauses, regroup=regroup).run("Redis: read", operation) == "done"
    assert made == [1] and len(calls) == 2
    assert pauses.taken == []  # no backoff after Redis came back without the groups
    # NOGROUP again right after making them: then it waits like any failure (no busy loop).
    operation, calls = failing([ResponseError("NOGROUP x")] * 3)
    assert await Retry(5.0, 10.0, sleep=pauses, regroup=regroup).run("Redis: read", operation) == "done"
    assert len(calls) == 4 and pauses.taken == [5.0]
    operation, calls = failing([ResponseError("NOGROUP No such key")])
    with pytest.raises(ResponseError):  # without a way to make the groups, NOGROUP is not for the policy
        await Retry(0.01, 0.01, sleep=Pauses()).run("Redis: read", operation)


async def test_when_closing_it_retries_within_the_grace_then_gives_up(caplog):
    pauses = Pauses()
    closed_for: list[float | None] = [None]
    retry = Retry(1.0, 10.0, closing=lambda: closed_for[0], grace_s=2.5, sleep=pauses)
    errors: list[BaseException] = [ConnectionError("down")] * 10
    calls = []

    async def operation() -> None:
        calls.append(1)
        closed_for[0] = {1: None, 2: 0.0, 3: 2.0}.get(len(calls), 3.0)  # closing began during the 2nd try
        raise errors.pop()

    with pytest.raises(Stopping):
        await retry.run("Redis: acknowledge", operation)
    assert len(calls) == 4
    assert pauses.taken == [1.0, 2.0, 0.5]  # the last pause cut to what was left of the grace
    assert "the shutdown grace is over: leaving it pending" in caplog.text

    # Without a grace (a hook runner, the migrations at start): given up at the first failure once closing.
    operation, calls = failing([ConnectionError("down")] * 3)
    with pytest.raises(Stopping):
        await Retry(1.0, 10.0, closing=lambda: 0.0, sleep=pauses).run("Postgres: record success", operation)
    assert len(calls) == 1


def test_delays_double_up_to_the_maximum_with_jitter_between_half_and_all_of_it():
    plain, jittered = Retry(0.5, 60.0), Retry(0.5, 60.0, jitter=True)
    assert [plain.delay(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60]
    assert [jittered.delay(n, rng=lambda: 0.0) for n in (1, 2, 9)] == [0.25, 0.5, 30]
    assert [jittered.delay(n, rng=lambda: 1.0) for n in (1, 2, 9)] == [0.5, 1, 60]


# -- heartbeats and snapshots ---------------------------------------------------------------------


async def test_a_heartbeat_writes_its_facts_with_a_ttl_and_is_forgotten_at_exit(raw_redis, redis, key_prefix):
    key, extra = f"{key_prefix}:alive:x", f"{key_prefix}:metrics:x"
    facts = FlusherHeartbeatFacts(consumer="x", pid=42, at=1.5, batches=3)
    beat = Heartbeat(raw_redis, key, 30, lambda: facts, also=lambda pipe: pipe.set(extra, b"1", ex=30))
    await beat.beat()
    assert decode(await redis.get(key), FlusherHeartbeatFacts) == facts
    assert 0 < await redis.ttl(key) <= 30 and await redis.exists(extra)
    await beat.forget(extra)
    assert not await redis.exists(key, extra)


def test_snapshots_keep_their_json_field_names_and_tolerate_old_and_new_writers():
    snapshot = FlusherMetricsSnapshot(consumer="c", batches=2, at=1.0)
    assert list(msgspec.json.decode(encode(snapshot))) == [
        "consumer", "batches", "rows_written", "duplicates", "dead_lettered", "lag_s", "commit_seconds", "at",
        "verdicts", "step_seconds"]  # a new field goes last; readers of an older writer get its default
    old = decode(b'{"consumer": "c", "pid": 7, "at": 3, "a_field_from_the_future": 1}', FlusherHeartbeatFacts)
    assert old == FlusherHeartbeatFacts(consumer="c", pid=7, at=3.0)
    assert decode(b"not json", FlusherHeartbeatFacts) is None
    assert decode(b'{"pid": "seven"}', FlusherHeartbeatFacts) is None
    assert decode(None, FlusherHeartbeatFacts) is None


async def test_a_heartbeat_follows_progress_and_lapses_a_ttl_after_work_in_hand_stopped_moving(raw_redis, redis,
                                                                                              key_prefix, caplog):
    now = [100.0]
    progress = Progress(clock=lambda: now[0])
    key = f"{key_prefix}:alive:p"
    beat = Heartbeat(raw_redis, key, 30, lambda: FlusherHeartbeatFacts(consumer="p"), stalled_for=progress.stalled_for)
    assert await beat.beat() and 29_000 < await redis.pttl(key) <= 30_000  # nothing in hand: a full TTL
    progress.took()
    now[0] += 20  # a batch in hand for 20 s without a commit: the key lives 10 s more, not 30
    assert await beat.beat() and 9_000 < await redis.pttl(key) <= 10_000
    progress.moved()  # a commit
    assert await beat.beat() and await redis.pttl(key) > 29_000
    now[0] += 30  # a whole TTL without a move: withdrawn, so the probe fails
    with caplog.at_level(logging.WARNING, logger="tracker.streams"):
        assert not await beat.beat()
    assert not await redis.exists(key)
    assert "no progress for 30s with work in hand: heartbeat withdrawn" in caplog.text
    with progress.idle():  # a backoff the destination asked for is not a stall
        assert progress.stalled_for() == 0.0
    progress.done()
    assert await beat.beat() and await redis.exists(key)


async def test_dead_consumers_are_removed_but_never_busy_ones_or_this_one(raw_redis, redis, key_prefix):
    streams = [f"{key_prefix}:s:{{0}}", f"{key_prefix}:s:{{1}}"]
    ours = GroupConsumer(raw_redis, streams, "g", "me", claim_idle_ms=60_000, forget_idle_ms=50)
    await ours.ensure_groups()
    for stream in streams:
        await add(redis, stream, 4)
        for name in ("dead-1", "dead-2"):
            for _stream, entries in await redis.xreadgroup("g", name, {stream: ">"}, count=1):
                await redis.xack(stream, "g", *[entry_id for entry_id, _ in entries])  # they hold nothing
    await redis.xreadgroup("g", "busy", {streams[0]: ">"}, count=1)  # holds an entry: never removed
    await redis.xreadgroup("g", "me", {streams[1]: ">"}, count=1)
    assert await ours.forget_dead_consumers() == []  # not idle long enough yet
    await asyncio.sleep(0.1)
    removed = await ours.forget_dead_consumers()
    assert sorted(removed) == sorted(f"{s}/{n}" for s in streams for n in ("dead-1", "dead-2"))
    left = {s: sorted(as_text(c["name"]) for c in await redis.xinfo_consumers(s, "g")) for s in streams}
    assert left == {streams[0]: ["busy"], streams[1]: ["me"]}
    # With each reclaim pass too (once a stream's pass is over).
    for _stream, entries in await redis.xreadgroup("g", "dead-3", {streams[1]: ">"}, count=1):
        await redis.xack(streams[1], "g", *[entry_id for entry_id, _ in entries])
    await asyncio.sleep(0.1)
    assert await ours.reclaim(10) == []
    assert [as_text(c["name"]) for c in await redis.xinfo_consumers(streams[1], "g")] == ["me"]
    # Without a threshold, nobody is removed.
    assert await reader(raw_redis, streams, "me").forget_dead_consumers() == []


async def test_shutdown_waits_end_even_when_a_task_ignores_its_cancellation():
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():  # what redis-py does when a cancellation lands inside a command
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)  # inside its sleep
    started = time.monotonic()
    assert await stop_tasks([task], 0.2, what="stubborn tasks") == {task}
    with pytest.raises(TimedOut):
        await bounded(stubborn(), 0.2)
    assert time.monotonic() - started < 2
    assert await bounded(asyncio.sleep(0, "ok"), 1) == "ok"
    release.set()
    await asyncio.sleep(0)


async def test_a_pause_after_a_redis_failure_ends_as_soon_as_redis_answers(redis) -> None:
    """A backoff grown long during an outage does not delay the first try once Redis is back."""
    failures = iter([ConnectionError("down"), ConnectionError("down")])

    async def operation() -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return "done"

    retry = Retry(30.0, 30.0, probe=redis.ping, probe_every_s=0.1)  # 30 s pauses, unless Redis answers
    started = time.monotonic()
    assert await retry.run("Redis: read", operation) == "done"
    assert time.monotonic() - started < 2

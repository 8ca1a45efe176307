"""Replay jobs: stored events of a time range (or one message) re-sent to one hook.

The API records a job and answers 202 at once (`create_replay`); a hooks worker
claims it (`claim_replay`) and pages through the events table in (ts, id)
order, putting each page on the hook's replay stream and then recording its
place (`ReplayRun`). Rules that keep it safe:

- Every write of the worker names it (`... and worker = $me and status =
  'running'`): a worker that lost the job (taken over, or the hook deleted)
  sees 0 rows changed and stops; at most its last page is sent twice.
- The worker renews a lease (`heartbeat_at`) while it works; a running job
  whose lease is older than LEASE_S is taken over from its recorded place.
- A cursor's transaction lasts at most CURSOR_S: a long read must not hold the
  events table against the flusher's partition maintenance for minutes.
- Pages are appended with NOMKSTREAM, so a deleted hook's stream is never
  made again, and only while the replay stream holds fewer than
  MAX_STREAM_ENTRIES entries: a replay never floods the Redis the edge needs.

Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from tracker.contract.events import Event, encode_batch, encode_event
from tracker.contract.keys import hook_replay_stream

REPLAY_COLUMNS = (
    "id, hook_id, since, until, message_id, max_events, status, queued_events, truncated, after_ts, error,"
    " created_at, started_at, finished_at"
)
LEASE_S = 30.0
CURSOR_S = 10.0
MAX_STREAM_ENTRIES = 100  # pages waiting in the hook's replay stream before the job waits
MAX_ATTEMPTS = 5  # claims of one job (worker deaths, Postgres or Redis failures) before it is failed
OPEN_JOBS_PER_HOOK = 3

# One sorted read per cursor; a new cursor starts after the recorded place.
_EVENTS = """
select id, ts, (extract(epoch from ts) * 1000000)::bigint as ts_us, kind, channel, message_id, profile_id,
       link_version, link_index, ua_class, ip_prefix, data::text as data, signals, ua_family, verdict, reasons
from events
where ts >= $1 and ts < $2 and ($3::bigint is null or message_id = $3)
  and ($4::timestamptz is null or (ts, id) > ($4, $5::uuid))
order by ts, id
limit $6
"""


class JobLost(Exception):
    """This worker no longer holds the job: taken over, or its hook was deleted."""


async def create_replay(conn: Any, hook_id: int, since: dt.datetime, until: dt.datetime,
                        message_id: int | None, max_events: int) -> Any:  # fmt: skip
    """The new job's row; None when the hook has OPEN_JOBS_PER_HOOK jobs queued or running already."""
    async with conn.transaction():
        # Serialises job creation per hook, so the count below cannot be raced past.
        await conn.execute("select from hooks where id = $1 for update", hook_id)
        open_jobs = await conn.fetchval(
            "select count(*) from hook_replays where hook_id = $1 and status in ('queued', 'running')", hook_id
        )
        if open_jobs >= OPEN_JOBS_PER_HOOK:
            return None
        return await conn.fetchrow(
            f"insert into hook_replays (hook_id, since, until, message_id, max_events) values ($1, $2, $3, $4, $5)"
            f" returning {REPLAY_COLUMNS}",
            hook_id, since, until, message_id, max_events,
        )  # fmt: skip


async def get_replay(conn: Any, hook_id: int, replay_id: int) -> Any:
    return await conn.fetchrow(
        f"select {REPLAY_COLUMNS} from hook_replays where hook_id = $1 and id = $2", hook_id, replay_id
    )


async def list_replays(conn: Any, hook_id: int, limit: int = 50) -> list[Any]:
    return await conn.fetch(
        f"select {REPLAY_COLUMNS} from hook_replays where hook_id = $1 order by id desc limit $2", hook_id, limit
    )


async def claim_replay(conn: Any, worker: str, busy: set[int], lease_s: float = LEASE_S) -> Any | None:
    """The oldest job to work on now, marked running by `worker`: queued, or running on a lapsed lease.

    `busy` lists the jobs this worker runs now. A job claimed MAX_ATTEMPTS times is failed instead.
    """
    while True:
        async with conn.transaction():
            row = await conn.fetchrow(
                "select id, attempts, error from hook_replays where (status = 'queued'"
                " or (status = 'running' and heartbeat_at < now() - $1 * interval '1 second'))"
                " and id <> all($2::bigint[]) order by id limit 1 for update skip locked",
                lease_s, list(busy),
            )  # fmt: skip
            if row is None:
                return None
            if row["attempts"] < MAX_ATTEMPTS:
                return await conn.fetchrow(
                    "update hook_replays set status = 'running', worker = $2, heartbeat_at = now(),"
                    " attempts = attempts + 1, started_at = coalesce(started_at, now()) where id = $1"
                    " returning id, hook_id, since, until, message_id, max_events, queued_events, after_ts,"
                    " after_id, attempts",
                    row["id"], worker,
                )  # fmt: skip
            last = f"; last error: {row['error']}" if row["error"] else ""
            await conn.execute(
                "update hook_replays set status = 'failed', finished_at = now(), error = $2 where id = $1",
                row["id"], f"given up after {row['attempts']} attempts{last}"[:2000],
            )  # fmt: skip


class ReplayRun:
    """One worker's run of one job, from its recorded place; `run()` True when the job is done."""

    def __init__(self, job: Any, worker: str, read: Any, write: Any, redis: Any, prefix: str, *,
                 page: int = 2000, stopping: Callable[[], bool] = lambda: False) -> None:  # fmt: skip
        self.job, self.worker = job, worker
        self.read, self.write, self.redis = read, write, redis
        self.target = hook_replay_stream(prefix, job["hook_id"])
        self.page = page
        self.stopping = stopping
        self.queued = job["queued_events"]
        self.after_ts, self.after_id = job["after_ts"], job["after_id"]
        self._writing = asyncio.Lock()  # the lease task and the pages share the write connection

    async def run(self) -> bool:
        left = max(0, self.job["max_events"] - self.queued)
        truncated = False
        while not truncated:
            # A cursor per CURSOR_S: its transaction ends, so DDL on the events table can get in between.
            opened, pending, more = time.monotonic(), [], False
            async with self.read.transaction(readonly=True):
                args = (self.job["since"], self.job["until"], self.job["message_id"], self.after_ts,
                        self.after_id or uuid.UUID(int=0), left + 1)  # fmt: skip
                async for row in self.read.cursor(_EVENTS, *args, prefetch=self.page):
                    if left == 0:
                        truncated = True  # one row past the cap: the range goes on
                        break
                    pending.append(row)
                    left -= 1
                    if len(pending) >= self.page:
                        await self._append(pending)
                        pending = []
                        if self.stopping():
                            return False
                        if time.monotonic() - opened >= CURSOR_S:
                            more = True
                            break
            if pending:
                await self._append(pending)
            if not more:
                break
        await self._fenced(
            "update hook_replays set status = 'done', truncated = $3, finished_at = now(), error = null", truncated
        )
        return True

    async def renew_lease(self) -> None:
        """Keep the lease while the job runs (as a task: a first sorted read may take a while)."""
        while True:
            await asyncio.sleep(LEASE_S / 3)
            await self._fenced("update hook_replays set heartbeat_at = now()")

    async def _append(self, rows: list[Any]) -> None:
        await self._wait_for_room()
        payload = encode_batch([encode_event(_event(row)) for row in rows])
        if await self.redis.xadd(self.target, {b"e": payload}, nomkstream=True) is None:
            # The stream is gone: the hook was deleted (the fence below says so), or Redis lost it.
            await self._fenced("update hook_replays set heartbeat_at = now()")
            raise RuntimeError(f"the hook's replay stream {self.target} is gone (Redis restarted without data?)")
        self.queued += len(rows)
        self.after_ts, self.after_id = rows[-1]["ts"], rows[-1]["id"]
        await self._fenced(
            "update hook_replays set queued_events = $3, after_ts = $4, after_id = $5, heartbeat_at = now()",
            self.queued, self.after_ts, self.after_id,
        )  # fmt: skip

    async def _wait_for_room(self) -> None:
        # Polled: the hook's runner trims the stream as it acknowledges, and tells nobody.
        for _ in itertools.count():
            if self.stopping() or await self.redis.xlen(self.target) < MAX_STREAM_ENTRIES:
                return
            await asyncio.sleep(0.5)

    async def _fenced(self, update: str, *args: Any) -> None:
        async with self._writing:
            status = await self.write.execute(
                f"{update} where id = $1 and worker = $2 and status = 'running'", self.job["id"], self.worker, *args
            )
        if status.endswith(" 0"):
            raise JobLost(f"replay {self.job['id']}")


async def fail_replay(conn: Any, replay_id: int, worker: str, error: str) -> None:
    await conn.execute(
        "update hook_replays set status = 'failed', error = $3, finished_at = now()"
        " where id = $1 and worker = $2 and status = 'running'",
        replay_id, worker, error[:2000],
    )  # fmt: skip


async def note_error(conn: Any, replay_id: int, worker: str, attempts: int, error: str) -> None:
    """A failure worth retrying: shown on the job, which a claim resumes after 2, 4, 8 ... s (MAX_ATTEMPTS)."""
    await conn.execute(
        "update hook_replays set error = $3, heartbeat_at = now() - ($4 - $5) * interval '1 second'"
        " where id = $1 and worker = $2 and status = 'running'",
        replay_id, worker, error[:2000], LEASE_S, float(2**attempts),
    )  # fmt: skip


def _event(row: Any) -> Event:
    return Event(row["id"].bytes, row["kind"], row["channel"], row["message_id"], row["profile_id"], row["ts_us"],
                 row["link_version"], row["link_index"], row["ua_class"], row["ip_prefix"],
                 None if row["data"] is None else json.loads(row["data"]), row["signals"], row["ua_family"],
                 row["verdict"], tuple(row["reasons"]))  # fmt: skip

"""Replay jobs: stored events of a time range (or one message) re-sent to one hook.

The API records a job and answers 202 at once (`create_replay`); a hooks worker
claims it (`claim_replay`) and pages through the events table in (ts, id)
order with one cursor, putting each page on the hook's replay stream and then
recording its place (`run_replay`). A worker that dies mid-job leaves it
`running` with its place; a worker that finds it so, and the dead worker's
heartbeat gone, carries on from there: at most the last page is sent twice,
with the same event ids. Nothing here knows about HTTP.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from tracker.events import Event, encode_batch, encode_event
from tracker.hooks import replay_stream

REPLAY_COLUMNS = (
    "id, hook_id, since, until, message_id, max_events, status, queued_events, truncated, error,"
    " created_at, started_at, finished_at"
)

# One query per job (or per resumed job): Postgres sorts the range once, the cursor pages it.
_EVENTS = """
select id, ts, (extract(epoch from ts) * 1000000)::bigint as ts_us, kind, channel, message_id, profile_id,
       link_version, link_index, ua_class, ip_prefix, data::text as data
from events
where ts >= $1 and ts < $2 and ($3::bigint is null or message_id = $3)
  and ($4::timestamptz is null or (ts, id) > ($4, $5::uuid))
order by ts, id
limit $6
"""


async def create_replay(conn: Any, hook_id: int, since: dt.datetime, until: dt.datetime,
                        message_id: int | None, max_events: int) -> Any:  # fmt: skip
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


async def claim_replay(conn: Any, worker: str, is_alive: Callable[[str], Awaitable[bool]],
                       busy: set[int]) -> Any | None:  # fmt: skip
    """The oldest job to work on now, marked running by `worker`; None when there is none.

    A queued job, or a running one whose worker is gone (no heartbeat, or this very
    worker restarted under the same name and not running it: `busy` lists ours).
    """
    async with conn.transaction():
        rows = await conn.fetch(
            "select id, status, worker from hook_replays where status in ('queued', 'running')"
            " order by id limit 100 for update skip locked"
        )
        for row in rows:
            if row["id"] in busy:
                continue
            if row["status"] == "running" and row["worker"] != worker and await is_alive(row["worker"]):
                continue
            return await conn.fetchrow(
                "update hook_replays set status = 'running', worker = $2, error = null,"
                " started_at = coalesce(started_at, now()) where id = $1"
                " returning id, hook_id, since, until, message_id, max_events, queued_events, after_ts, after_id",
                row["id"], worker,
            )  # fmt: skip
    return None


async def run_replay(read: Any, write: Any, redis: Any, prefix: str, job: Any, *, page: int = 2000,
                     stopping: Callable[[], bool] = lambda: False) -> bool:  # fmt: skip
    """Page the job's events onto the hook's replay stream from where it stands; True when finished.

    `read` holds the cursor's transaction; `write` records progress after each page, so
    that what is recorded has been queued. False: `stopping()` said so; the job stays running.
    """
    target = replay_stream(prefix, job["hook_id"])
    queued, after_ts, after_id = job["queued_events"], job["after_ts"], job["after_id"]
    left = max(0, job["max_events"] - queued)
    pending: list[Any] = []

    async def flush() -> None:
        nonlocal queued, after_ts, after_id
        payloads = [encode_event(_event(row)) for row in pending]
        await redis.xadd(target, {b"e": encode_batch(payloads)})
        queued += len(pending)
        after_ts, after_id = pending[-1]["ts"], pending[-1]["id"]
        pending.clear()
        await write.execute(
            "update hook_replays set queued_events = $2, after_ts = $3, after_id = $4 where id = $1",
            job["id"], queued, after_ts, after_id,
        )  # fmt: skip

    truncated = False
    taken = 0
    async with read.transaction(readonly=True):
        # One row past the cap says whether the cap cut the range short.
        args = (job["since"], job["until"], job["message_id"], after_ts, after_id or uuid.UUID(int=0), left + 1)
        async for row in read.cursor(_EVENTS, *args, prefetch=page):
            if taken >= left:
                truncated = True
                break
            pending.append(row)
            taken += 1
            if len(pending) >= page:
                await flush()
                if stopping():
                    return False
    if pending:
        await flush()
    await write.execute(
        "update hook_replays set status = 'done', truncated = $2, finished_at = now() where id = $1",
        job["id"], truncated,
    )  # fmt: skip
    return True


async def fail_replay(conn: Any, replay_id: int, error: str) -> None:
    await conn.execute(
        "update hook_replays set status = 'failed', error = $2, finished_at = now() where id = $1",
        replay_id, error[:2000],
    )  # fmt: skip


def _event(row: Any) -> Event:
    return Event(row["id"].bytes, row["kind"], row["channel"], row["message_id"], row["profile_id"], row["ts_us"],
                 row["link_version"], row["link_index"], row["ua_class"], row["ip_prefix"],
                 None if row["data"] is None else json.loads(row["data"]))  # fmt: skip

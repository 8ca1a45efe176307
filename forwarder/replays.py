"""The hooks worker's side of replay jobs: claim the oldest open job, run it, poll for the next.

Jobs are rare and can be long (up to TRACKER_HOOKS_REPLAY_MAX_EVENTS events):
one at a time per worker, on two pooled connections (the cursor's and the
progress writer's), checking between pages whether the worker is closing.
A failure of Postgres or Redis is noted on the job, which a later claim (of
this worker or another) resumes from its recorded place, up to
tracker.domain.hook_replays.MAX_ATTEMPTS claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg
from redis.asyncio import Redis

from tracker.config import Settings
from tracker.domain.hook_replays import JobLost, ReplayRun, claim_replay, fail_replay, note_error
from tracker.streams.retry import (
    ANY_TRANSIENT,
    FATAL,
    POSTGRES_TRANSIENT,
    Outage,
    error_text,
    is_fatal,
    is_operational,
)

log = logging.getLogger("hooks")
POLL_S = 1.0


class Replays:
    def __init__(self, settings: Settings, redis: Redis, pool: asyncpg.Pool, consumer: str) -> None:
        self.settings = settings
        self.redis = redis
        self.pool = pool
        self.consumer = consumer
        self.busy: set[int] = set()

    async def run_open_jobs(self, stopping: Callable[[], bool]) -> int:
        """Claim and run jobs until none is ready (or `stopping()`); the number finished."""
        finished = 0
        while not stopping():
            async with self.pool.acquire() as conn:
                job = await claim_replay(conn, self.consumer, self.busy)
            if job is None:
                break
            finished += await self._run(job, stopping)
        return finished

    async def loop(self, closing: asyncio.Event) -> None:
        """Poll for jobs until `closing`; failures are logged once per outage, a fatal one is raised."""
        outage = Outage(log, "replay jobs")
        while not closing.is_set():
            try:
                await self.run_open_jobs(closing.is_set)
            except Exception as exc:
                if is_fatal(exc):  # bad credentials, the schema missing: the worker stops with it
                    raise
                if not is_operational(exc) and not outage.failing:
                    log.error("replay jobs: unexpected failure", exc_info=exc)
                outage.failed(exc, f"polling again every {POLL_S:.0f}s")
            else:
                outage.recovered()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), POLL_S)

    async def _run(self, job: asyncpg.Record, stopping: Callable[[], bool]) -> bool:
        replay_id, hook_id = job["id"], job["hook_id"]
        resumed = f" (resumed after {job['queued_events']:,} events)" if job["queued_events"] else ""
        log.info("replay %d to hook %d: started%s", replay_id, hook_id, resumed)
        self.busy.add(replay_id)
        try:
            async with self.pool.acquire() as read, self.pool.acquire() as write:
                run = ReplayRun(job, self.consumer, read, write, self.redis, self.settings.stream_prefix,
                                stopping=stopping)  # fmt: skip
                lease = asyncio.create_task(run.renew_lease())
                try:
                    done = await run.run()
                except JobLost:
                    log.info("replay %d to hook %d: no longer ours (taken over, or the hook deleted)", replay_id,
                             hook_id)  # fmt: skip
                    return False
                except FATAL:
                    raise  # bad credentials, the schema missing: the worker stops with it
                except ANY_TRANSIENT as exc:
                    log.warning("replay %d to hook %d: %s; it resumes from its place later", replay_id, hook_id,
                                error_text(exc))  # fmt: skip
                    with contextlib.suppress(*POSTGRES_TRANSIENT):
                        await note_error(write, replay_id, self.consumer, job["attempts"], error_text(exc))
                    return False
                except Exception as exc:
                    log.exception("replay %d to hook %d failed", replay_id, hook_id)
                    await fail_replay(write, replay_id, self.consumer, f"{type(exc).__name__}: {exc}")
                    return False
                finally:
                    lease.cancel()
                    # The lease task may have been writing: wait for it before the connection goes back.
                    await asyncio.gather(lease, return_exceptions=True)
        finally:
            self.busy.discard(replay_id)
        log.info("replay %d to hook %d: %s", replay_id, hook_id, "done" if done else "paused: the worker is closing")
        return done

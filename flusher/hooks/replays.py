"""The hooks worker's side of replay jobs: claim the oldest open job, run it, poll for the next.

Jobs are rare and can be long (up to TRACKER_HOOKS_REPLAY_MAX_EVENTS events):
one at a time per worker, on two pooled connections (the cursor's and the
progress writer's), checking between pages whether the worker is closing. A
failure of Postgres or Redis leaves the job running under this worker's name,
and the next poll resumes it from its recorded place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg
from redis.asyncio import Redis

from flusher._retry import POSTGRES_TRANSIENT, REDIS_TRANSIENT
from tracker.hook_replays import claim_replay, fail_replay, run_replay
from tracker.hooks import worker_heartbeat_key
from tracker.settings import Settings

log = logging.getLogger("hooks")
POLL_S = 1.0


class Replays:
    def __init__(self, settings: Settings, redis: Redis, pool: asyncpg.Pool, consumer: str) -> None:
        self.settings = settings
        self.redis = redis
        self.pool = pool
        self.consumer = consumer
        self.busy: set[int] = set()
        self.finished = 0

    async def run_open_jobs(self, stopping: Callable[[], bool]) -> int:
        """Claim and run jobs until none is left (or `stopping()`); the number finished."""
        finished = 0
        while not stopping():
            async with self.pool.acquire() as conn:
                job = await claim_replay(conn, self.consumer, self._alive, self.busy)
            if job is None:
                break
            finished += await self._run(job, stopping)
        self.finished += finished
        return finished

    async def loop(self, closing: asyncio.Event) -> None:
        while not closing.is_set():
            try:
                await self.run_open_jobs(closing.is_set)
            except (*POSTGRES_TRANSIENT, *REDIS_TRANSIENT) as exc:
                log.warning("replay jobs: %r; trying again in %.0fs", exc, POLL_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), POLL_S)

    async def _run(self, job: asyncpg.Record, stopping: Callable[[], bool]) -> bool:
        replay_id, hook_id = job["id"], job["hook_id"]
        resumed = f" (resumed after {job['queued_events']:,} events)" if job["queued_events"] else ""
        log.info("replay %d to hook %d: started%s", replay_id, hook_id, resumed)
        self.busy.add(replay_id)
        try:
            async with self.pool.acquire() as read, self.pool.acquire() as write:
                try:
                    done = await run_replay(read, write, self.redis, self.settings.stream_prefix, job,
                                            stopping=stopping)  # fmt: skip
                except (*POSTGRES_TRANSIENT, *REDIS_TRANSIENT):
                    raise  # left running under this worker's name: the next poll carries on
                except Exception as exc:
                    log.exception("replay %d to hook %d failed", replay_id, hook_id)
                    await fail_replay(write, replay_id, f"{type(exc).__name__}: {exc}")
                    return False
        finally:
            self.busy.discard(replay_id)
        log.info("replay %d to hook %d: %s", replay_id, hook_id, "done" if done else "paused: the worker is closing")
        return done

    async def _alive(self, worker: str) -> bool:
        return bool(await self.redis.exists(worker_heartbeat_key(self.settings.stream_prefix, worker)))

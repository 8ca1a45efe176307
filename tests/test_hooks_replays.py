"""Replay jobs: asked through the API, run by a hooks worker, capped, and resumed after a worker dies."""

from __future__ import annotations

import uuid

import asyncpg

from flusher.hooks.dispatcher import HooksWorker
from tests.api_helpers import running_api
from tests.flusher_helpers import drain, event, make_message, now_us, push
from tests.hook_helpers import hook_settings, http_receiver, no_hooks_left, running_worker, until  # noqa: F401
from tracker.hook_replays import claim_replay, run_replay
from tracker.hooks import worker_heartbeat_key


def ids(events: list) -> list[str]:
    return [str(uuid.UUID(bytes=e.id)) for e in events]


async def stored_before_the_hook(redis, settings, pg, count: int) -> tuple[int, list]:
    """A message with `count` events an hour old, one per profile, in time order."""
    message = await make_message(pg)
    start = now_us() - 3_600_000_000
    events = [event(message, p, ts_us=start + p * 1000) for p in range(1, count + 1)]
    await push(redis, settings, events)
    await drain(settings)
    return message, events


async def job_of(api, hook_id: int, replay_id: int) -> dict:
    return (await api.call("GET", f"/hooks/{hook_id}/replays/{replay_id}")).json()


async def test_a_running_worker_picks_up_a_job_and_the_cap_truncates_it_in_time_order(settings, redis, pg):
    settings = hook_settings(settings, hooks_replay_max_events=12)
    message, events = await stored_before_the_hook(redis, settings, pg, 20)
    with http_receiver() as receiver:
        async with running_api(settings) as api, running_worker(settings):
            body = {"name": "lost data", "destination": {"type": "http", "url": receiver.url, "max_events": 5}}
            hook_id = (await api.call("POST", "/hooks", json=body)).json()["id"]
            job = (await api.call("POST", f"/hooks/{hook_id}/replay", json={"message_id": message})).json()
            assert (job["status"], job["max_events"]) == ("queued", 12)

            async def finished() -> bool:
                return (await job_of(api, hook_id, job["id"]))["status"] == "done"

            await until(finished, 10, "the worker to run the job")
            job = await job_of(api, hook_id, job["id"])
            await until(lambda: len(receiver.events()) >= 12, 10, "the replayed events")
    assert (job["queued"], job["truncated"]) == (12, True)
    # The earliest twelve: "replay the rest from the last event's time" is then well defined.
    assert [e["id"] for e in receiver.events()] == ids(events[:12])


async def test_a_job_left_running_by_a_dead_worker_is_resumed_from_its_place(settings, redis, pg):
    settings = hook_settings(settings)
    message, events = await stored_before_the_hook(redis, settings, pg, 25)
    with http_receiver() as receiver:
        async with running_api(settings) as api:
            body = {"name": "lost data", "destination": {"type": "http", "url": receiver.url}}
            hook_id = (await api.call("POST", "/hooks", json=body)).json()["id"]
            job = (await api.call("POST", f"/hooks/{hook_id}/replay", json={"message_id": message})).json()

            # A worker takes the job, queues one page of 10 and dies (no heartbeat of it remains).
            conn = await asyncpg.connect(settings.database_url)
            write = await asyncpg.connect(settings.database_url)
            try:
                async def nobody_alive(worker: str) -> bool:
                    return False

                claimed = await claim_replay(conn, "doomed", nobody_alive, set())
                assert claimed["id"] == job["id"]
                finished = await run_replay(conn, write, redis, settings.stream_prefix, claimed, page=10,
                                            stopping=lambda: True)  # fmt: skip
                assert finished is False
                # Another worker whose heartbeat is live holds a job: nobody else takes it.
                await redis.set(worker_heartbeat_key(settings.stream_prefix, "doomed"), "{}", ex=30)

                async def redis_says(worker: str) -> bool:
                    return bool(await redis.exists(worker_heartbeat_key(settings.stream_prefix, worker)))

                assert await claim_replay(conn, "other", redis_says, set()) is None
                await redis.delete(worker_heartbeat_key(settings.stream_prefix, "doomed"))
            finally:
                await conn.close()
                await write.close()
            half = await job_of(api, hook_id, job["id"])
            assert (half["status"], half["queued"]) == ("running", 10)

            await HooksWorker(settings.replace(hooks_consumer="successor"), burst=True).run()
            done = await job_of(api, hook_id, job["id"])
    assert (done["status"], done["queued"], done["truncated"]) == ("done", 25, False)
    # The page queued before the death and the rest after it: each event once, in time order.
    assert [e["id"] for e in receiver.events()] == ids(events)


async def test_deleting_the_hook_deletes_its_jobs(settings, redis, pg):
    settings = hook_settings(settings)
    message, _events = await stored_before_the_hook(redis, settings, pg, 3)
    with http_receiver() as receiver:
        async with running_api(settings) as api:
            body = {"name": "short-lived", "destination": {"type": "http", "url": receiver.url}}
            hook_id = (await api.call("POST", "/hooks", json=body)).json()["id"]
            job = (await api.call("POST", f"/hooks/{hook_id}/replay", json={"message_id": message})).json()
            assert (await api.call("DELETE", f"/hooks/{hook_id}")).status_code == 204
            assert (await api.call("GET", f"/hooks/{hook_id}/replays/{job['id']}")).status_code == 404
    assert await pg.fetchval("select count(*) from hook_replays where id = $1", job["id"]) == 0

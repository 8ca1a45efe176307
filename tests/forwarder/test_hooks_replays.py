"""Replay jobs: asked through the API, run by a hooks worker, capped, resumed, taken over, fenced."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import asyncpg
import pytest

from flusher.partitions import create_days
from forwarder.worker import HooksWorker
from tests.rigs.api_helpers import running_api
from tests.rigs.flusher_helpers import drain, event, make_message, now_us, push
from tests.rigs.hook_helpers import hook_settings, http_receiver, no_hooks_left, running_worker, until  # noqa: F401
from tracker.contract.events import decode_batch
from tracker.contract.keys import hook_replay_stream
from tracker.domain.hook_replays import OPEN_JOBS_PER_HOOK, JobLost, ReplayRun, claim_replay


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


async def new_hook(api, url: str, **destination: object) -> int:
    body = {"name": "lost data", "destination": {"type": "http", "url": url, **destination}}
    return (await api.call("POST", "/hooks", json=body)).json()["id"]


async def connections(settings) -> tuple[asyncpg.Connection, asyncpg.Connection]:
    return await asyncpg.connect(settings.database_url), await asyncpg.connect(settings.database_url)


async def test_a_running_worker_picks_up_a_job_and_the_cap_truncates_it_in_time_order(settings, redis, pg):
    settings = hook_settings(settings, replay_max_events=12)
    message, events = await stored_before_the_hook(redis, settings, pg, 20)
    with http_receiver() as receiver:
        async with running_api(settings) as api, running_worker(settings):
            hook_id = await new_hook(api, receiver.url, max_events=5)
            job = (await api.call("POST", f"/hooks/{hook_id}/replay", json={"message_id": message})).json()
            assert (job["status"], job["max_events"], job["resume_from"]) == ("queued", 12, None)

            async def finished() -> bool:
                return (await job_of(api, hook_id, job["id"]))["status"] == "done"

            await until(finished, 10, "the worker to run the job")
            job = await job_of(api, hook_id, job["id"])
            await until(lambda: len(receiver.events()) >= 12, 10, "the replayed events")
    assert (job["queued"], job["truncated"]) == (12, True)
    # The earliest twelve, and where to ask again from for the rest.
    assert [e["id"] for e in receiver.events()] == ids(events[:12])
    assert dt.datetime.fromisoformat(job["resume_from"]).timestamp() * 1e6 == pytest.approx(events[11].ts_us)


async def test_a_job_whose_worker_died_is_resumed_from_its_place_once_the_lease_lapses(settings, redis, pg):
    settings = hook_settings(settings)
    message, events = await stored_before_the_hook(redis, settings, pg, 25)
    with http_receiver() as receiver:
        async with running_api(settings) as api:
            hook_id = await new_hook(api, receiver.url)
            job = (await api.call("POST", f"/hooks/{hook_id}/replay", json={"message_id": message})).json()

            # A worker takes the job, queues one page of 10 and dies.
            read, write = await connections(settings)
            try:
                claimed = await claim_replay(read, "doomed", set())
                assert claimed["id"] == job["id"]
                run = ReplayRun(claimed, "doomed", read, write, redis, settings.stream_prefix, page=10,
                                stopping=lambda: True)  # fmt: skip
                assert await run.run() is False
                # Its lease is fresh: nobody takes the job over yet.
                assert await claim_replay(read, "other", set()) is None
                await write.execute("update hook_replays set heartbeat_at = now() - interval '1 minute'")
            finally:
                await read.close()
                await write.close()
            half = await job_of(api, hook_id, job["id"])
            assert (half["status"], half["queued"]) == ("running", 10)

            await HooksWorker(settings.replace(forwarder={"consumer": "successor"}), burst=True).run()
            done = await job_of(api, hook_id, job["id"])
    assert (done["status"], done["queued"], done["truncated"], done["error"]) == ("done", 25, False, None)
    # The page queued before the death and the rest after it: each event once, in time order.
    assert [e["id"] for e in receiver.events()] == ids(events)


async def test_a_worker_that_lost_its_job_stops_writing(settings, redis, pg):
    settings = hook_settings(settings)
    message, events = await stored_before_the_hook(redis, settings, pg, 30)
    async with running_api(settings) as api:
        hook_id = await new_hook(api, "http://127.0.0.1:9/unused")
        job = (await api.call("POST", f"/hooks/{hook_id}/replay", json={"message_id": message})).json()
        read, write = await connections(settings)
        read2, write2 = await connections(settings)
        try:
            slow = ReplayRun(await claim_replay(read, "slow", set()), "slow", read, write, redis,
                             settings.stream_prefix, page=10, stopping=lambda: True)  # fmt: skip
            assert await slow.run() is False  # one page queued, then it stalls past its lease
            await write.execute("update hook_replays set heartbeat_at = now() - interval '1 minute'")
            taken = await claim_replay(read2, "taker", set())
            assert (taken["id"], taken["queued_events"], taken["attempts"]) == (job["id"], 10, 2)
            slow.stopping = lambda: False
            with pytest.raises(JobLost):
                await slow.run()  # its next page's record is refused: it stops
            assert await ReplayRun(taken, "taker", read2, write2, redis, settings.stream_prefix, page=10).run()
        finally:
            for conn in (read, write, read2, write2):
                await conn.close()
        done = await job_of(api, hook_id, job["id"])
    assert (done["status"], done["queued"]) == ("done", 30)
    entries = await redis.xrange(hook_replay_stream(settings.stream_prefix, hook_id))
    queued = [e.id for _id, fields in entries for e in decode_batch(fields[b"e"])]
    # The loser's page after the takeover went out once more (at-least-once); nothing is missing.
    assert len(entries) == 4 and len(queued) == 40 and set(queued) == {e.id for e in events}


async def test_deleting_the_hook_mid_replay_stops_the_job_without_making_its_stream_again(settings, redis, pg):
    settings = hook_settings(settings)
    message, _events = await stored_before_the_hook(redis, settings, pg, 30)
    async with running_api(settings) as api:
        hook_id = await new_hook(api, "http://127.0.0.1:9/unused")
        job = (await api.call("POST", f"/hooks/{hook_id}/replay", json={"message_id": message})).json()
        read, write = await connections(settings)
        try:
            run = ReplayRun(await claim_replay(read, "w", set()), "w", read, write, redis, settings.stream_prefix,
                            page=10, stopping=lambda: True)  # fmt: skip
            assert await run.run() is False
            assert (await api.call("DELETE", f"/hooks/{hook_id}")).status_code == 204
            run.stopping = lambda: False
            with pytest.raises(JobLost):
                await run.run()
        finally:
            await read.close()
            await write.close()
        assert (await api.call("GET", f"/hooks/{hook_id}/replays/{job['id']}")).status_code == 404
    assert not await redis.exists(hook_replay_stream(settings.stream_prefix, hook_id))
    assert await pg.fetchval("select count(*) from hook_replays where id = $1", job["id"]) == 0


async def test_a_hook_has_at_most_a_few_open_jobs(settings, redis, pg):
    settings = hook_settings(settings)
    message = await make_message(pg)
    async with running_api(settings) as api:
        hook_id = await new_hook(api, "http://127.0.0.1:9/unused")
        for _ in range(OPEN_JOBS_PER_HOOK):
            assert (await api.call("POST", f"/hooks/{hook_id}/replay", json={"message_id": message})).status_code == 202
        refused = await api.call("POST", f"/hooks/{hook_id}/replay", json={"message_id": message})
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "too_many_replays"
        listed = (await api.call("GET", f"/hooks/{hook_id}/replays")).json()["replays"]
        assert [job["status"] for job in listed] == ["queued"] * OPEN_JOBS_PER_HOOK


async def test_partition_ddl_gives_way_to_a_long_reader_instead_of_stalling_inserts(settings, pg):
    reader = await asyncpg.connect(settings.database_url)
    try:
        async with reader.transaction(readonly=True):
            await reader.fetch("select id from events limit 1")  # holds the events table, as a replay's cursor does
            started = time.monotonic()
            with pytest.raises(asyncpg.LockNotAvailableError):
                await create_days(pg, [dt.date(2001, 1, 1)])
            assert time.monotonic() - started < 5
    finally:
        await reader.close()

"""Hooks under failure: outages, automatic pause and resume, dead letters, isolation between hooks."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from forwarder.runner import delivery_retry
from forwarder.worker import HooksWorker
from tests.rigs.api_helpers import running_api
from tests.rigs.flusher_helpers import drain, event, make_message, push
from tests.rigs.hook_helpers import SECRET, hook_settings, http_receiver, no_hooks_left, running_worker, until  # noqa: F401
from tracker.contract.keys import committed_stream


def http_hook(url: str, name: str = "crm", **extra: object) -> dict:
    return {"name": name, "destination": {"type": "http", "url": url, "secret": SECRET, "timeout_s": 0.3, **extra}}


def ids(events: list) -> set[str]:
    return {str(uuid.UUID(bytes=e.id)) for e in events}


@pytest.mark.slow  # several seconds of a real outage or processes: the full run has it
async def test_a_destination_down_for_a_while_then_back_gets_every_event_and_duplicates_only_by_id(
    settings, redis, pg
):
    settings = hook_settings(settings, pause_after_failures=0)
    message = await make_message(pg)
    with http_receiver() as receiver:
        receiver.default = "500"
        async with running_api(settings) as api, running_worker(settings):
            await api.call("POST", "/hooks", json=http_hook(receiver.url, max_events=7))
            first = [event(message, p, "opened") for p in range(1, 40)]
            await push(redis, settings, first)
            await drain(settings)
            await until(lambda: len(receiver.requests) >= 4, 10, "failed tries")
            receiver.script = ["close", "hang"]  # still broken, differently
            second = [event(message, p, "clicked") for p in range(1, 40)]
            await push(redis, settings, second)
            await drain(settings)
            receiver.default = "200"
            await until(lambda: ids(first + second) <= {e["id"] for e in receiver.events()}, 15, "every event")
        got = receiver.events()
        assert {e["id"] for e in got} == ids(first + second)
        # A duplicate is a whole delivery sent again: same events under the same batch id.
        by_batch: dict[str, list[str]] = {}
        for received in receiver.accepted:
            sent = [e["id"] for e in received.json["events"]]
            assert by_batch.setdefault(received.json["batch_id"], sent) == sent
        assert max(Counter(e["id"] for e in got).values()) == 1 or len(by_batch) < len(receiver.accepted)


@pytest.mark.slow  # several seconds of a real outage or processes: the full run has it
async def test_a_hook_that_keeps_failing_is_paused_with_its_backlog_and_resumes_from_it(settings, redis, pg):
    settings = hook_settings(settings, pause_after_failures=3)
    message = await make_message(pg)
    with http_receiver() as receiver:
        receiver.default = "500"
        async with running_api(settings) as api, running_worker(settings):
            hook_id = (await api.call("POST", "/hooks", json=http_hook(receiver.url))).json()["id"]
            events = [event(message, p) for p in range(1, 30)]
            await push(redis, settings, events)
            await drain(settings)

            async def state() -> str:
                return (await api.call("GET", f"/hooks/{hook_id}")).json()["state"]

            await until(lambda: _equals(state(), "failing"), 10, "the hook to be set failing")
            tries = len(receiver.requests)
            await asyncio.sleep(0.5)
            assert len(receiver.requests) == tries == 3  # paused: no more tries
            hook = (await api.call("GET", f"/hooks/{hook_id}")).json()
            assert hook["backlog_entries"] >= 1 and hook["consecutive_failures"] == 3
            assert hook["last_error"].startswith("HTTP 500")
            receiver.default = "200"
            resumed = (await api.call("POST", f"/hooks/{hook_id}/resume")).json()
            assert resumed["state"] == "active" and resumed["consecutive_failures"] == 0
            await until(lambda: ids(events) <= {e["id"] for e in receiver.events()}, 10, "the backlog")
            await until(lambda: _equals(_backlog(api, hook_id), 0), 5, "an empty backlog")


async def test_old_events_that_still_fail_go_to_the_dead_letters_and_can_be_sent_again(settings, redis, pg):
    settings = hook_settings(settings, pause_after_failures=0, dead_letter_after_s=0.0)
    message = await make_message(pg)
    with http_receiver() as receiver:
        receiver.default = "500"
        async with running_api(settings) as api:
            hook_id = (await api.call("POST", "/hooks", json=http_hook(receiver.url))).json()["id"]
            events = [event(message, p, "hard_bounce") for p in range(1, 6)]
            await push(redis, settings, events)
            await drain(settings)
            await HooksWorker(settings, burst=True).run()
            assert len(receiver.requests) == 3 and not receiver.accepted
            dead = (await api.call("GET", f"/hooks/{hook_id}/dead-letters")).json()["dead_letters"]
            assert len(dead) == 1 and dead[0]["events"] == 5 and dead[0]["attempts"] == 3
            assert dead[0]["error"].startswith("HTTP 500") and set(dead[0]["event_ids"]) == ids(events)
            hook = (await api.call("GET", f"/hooks/{hook_id}")).json()
            assert hook["dead_lettered"] == 5 and hook["backlog_entries"] == 0 and hook["dead_letter_entries"] == 1

            receiver.default = "200"
            requeued = await api.call("POST", f"/hooks/{hook_id}/dead-letters/replay")
            assert requeued.status_code == 202 and requeued.json() == {"requeued": 5}
            await HooksWorker(settings, burst=True).run()
            assert {e["id"] for e in receiver.events()} == ids(events)
            assert (await api.call("GET", f"/hooks/{hook_id}/dead-letters")).json()["dead_letters"] == []


async def test_a_hanging_destination_holds_back_neither_the_flusher_nor_another_hook(settings, redis, pg):
    settings = hook_settings(settings, pause_after_failures=0)
    message = await make_message(pg)
    with http_receiver() as slow, http_receiver() as fast:
        slow.default = "hang"
        async with running_api(settings) as api, running_worker(settings):
            await api.call("POST", "/hooks", json=http_hook(slow.url, "slow"))
            await api.call("POST", "/hooks", json=http_hook(fast.url, "fast"))
            events = [event(message, p) for p in range(1, 50)]
            await push(redis, settings, events)
            await drain(settings)  # returns while the slow hook is still trying
            await until(lambda: ids(events) <= {e["id"] for e in fast.events()}, 5, "the fast hook")
            assert not slow.accepted and slow.requests


async def test_a_paused_hook_keeps_its_backlog_in_the_committed_streams_while_others_trim(settings, redis, pg):
    settings = hook_settings(settings.replace(stream_shards=1))
    message = await make_message(pg)
    with http_receiver() as paused_receiver, http_receiver() as active_receiver:
        async with running_api(settings) as api:
            paused = (await api.call("POST", "/hooks", json={**http_hook(paused_receiver.url), "state": "paused"}))
            await api.call("POST", "/hooks", json=http_hook(active_receiver.url, "active"))
            hook_id = paused.json()["id"]
            events = [event(message, p) for p in range(1, 20)]
            await push(redis, settings, events)
            await drain(settings)
            await HooksWorker(settings, burst=True).run()
            assert {e["id"] for e in active_receiver.events()} == ids(events) and not paused_receiver.requests
            assert await redis.xlen(committed_stream(settings.stream_prefix, 0)) >= 1  # not trimmed past it
            assert (await api.call("GET", f"/hooks/{hook_id}")).json()["backlog_entries"] >= 1
            await api.call("POST", f"/hooks/{hook_id}/resume")
            await HooksWorker(settings, burst=True).run()
            assert {e["id"] for e in paused_receiver.events()} == ids(events)
            assert await redis.xlen(committed_stream(settings.stream_prefix, 0)) == 0  # every group is past it


def test_the_retry_schedule_doubles_from_the_minimum_up_to_the_maximum_with_jitter(settings):
    settings = settings.replace(forwarder={"retry_min_s": 0.5, "retry_max_s": 60.0})
    highest = [delivery_retry(settings).delay(n, rng=lambda: 1.0) for n in range(1, 10)]
    lowest = [delivery_retry(settings).delay(n, rng=lambda: 0.0) for n in range(1, 10)]
    assert highest == [0.5, 1, 2, 4, 8, 16, 32, 60, 60]
    assert lowest == [h / 2 for h in highest]


async def _equals(value, expected) -> bool:
    return (await value) == expected


async def _backlog(api, hook_id: int) -> int:
    return (await api.call("GET", f"/hooks/{hook_id}")).json()["backlog_entries"]

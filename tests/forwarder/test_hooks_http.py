"""Action hooks over HTTP, end to end: API -> flusher commit -> committed streams -> hooks worker -> receiver."""

from __future__ import annotations

import uuid

from forwarder.worker import HooksWorker
from tests.rigs.api_helpers import running_api
from tests.rigs.flusher_helpers import drain, event, make_message, make_profiles, push
from tests.rigs.hook_helpers import SECRET, hook_settings, http_receiver, no_hooks_left  # noqa: F401
from tracker.contract.keys import committed_streams


def http_hook(url: str, **extra: object) -> dict:
    return {"name": "crm", "destination": {"type": "http", "url": url, "secret": SECRET, "timeout_s": 0.3, **extra}}


async def deliver(settings) -> HooksWorker:
    worker = HooksWorker(settings, burst=True)
    await worker.run()
    return worker


async def test_a_hook_receives_the_committed_events_it_asked_for_signed_and_batched(settings, redis, pg):
    settings = hook_settings(settings)
    message = await make_message(pg)
    profiles = await make_profiles(pg, 3)
    with http_receiver() as receiver:
        async with running_api(settings) as api:
            body = {**http_hook(receiver.url), "filter": {"kinds": ["opened", "clicked"]}}
            created = await api.call("POST", "/hooks", json=body)
            assert created.status_code == 201, created.text
            events = [event(message, p, kind) for p in profiles for kind in ("opened", "clicked", "delivered")]
            await push(redis, settings, events)
            await drain(settings)
            await deliver(settings)
            wanted = {str(uuid.UUID(bytes=e.id)) for e in events if e.kind != "delivered"}
            got = receiver.events()
            assert {e["id"] for e in got} == wanted
            assert len(got) == len(wanted)
            first = receiver.accepted[0]
            assert first.signed_by(SECRET)
            assert first.json["batch_id"] == first.headers["idempotency-key"] == first.headers["x-tracker-batch-id"]
            assert first.json["hook_id"] == created.json()["id"]
            sample = next(e for e in got if e["kind"] == "opened")
            assert sample["message_id"] == message and sample["channel"] == "email" and sample["time"].endswith("Z")


async def test_without_hooks_the_flusher_forwards_nothing(settings, redis, pg):
    message = await make_message(pg)
    await push(redis, settings, [event(message, 1)])
    await drain(settings)
    assert not await redis.exists(*committed_streams(settings.stream_prefix, settings.stream_shards))


async def test_a_failed_post_is_retried_until_acknowledged_with_the_same_batch_id(settings, redis, pg):
    settings = hook_settings(settings)
    message = await make_message(pg)
    with http_receiver() as receiver:
        receiver.script = ["500", "close", "hang", "503", "200"]
        async with running_api(settings) as api:
            hook_id = (await api.call("POST", "/hooks", json=http_hook(receiver.url))).json()["id"]
            events = [event(message, 7, "clicked")]
            await push(redis, settings, events)
            await drain(settings)
            await deliver(settings)
            assert len(receiver.requests) == 5
            assert len({r.json["batch_id"] for r in receiver.requests}) == 1
            assert all(r.signed_by(SECRET) for r in receiver.requests)
            assert [e["id"] for e in receiver.events()] == [str(uuid.UUID(bytes=events[0].id))]
            hook = (await api.call("GET", f"/hooks/{hook_id}")).json()
            assert hook["state"] == "active" and hook["consecutive_failures"] == 0 and hook["delivered"] == 1
            assert hook["last_error"].startswith("HTTP 503")  # the last failure stays visible
            assert hook["backlog_entries"] == 0

"""Action hooks over HTTP, end to end: API -> flusher commit -> committed streams -> hooks worker -> receiver."""

from __future__ import annotations

import uuid

from flusher.hooks.dispatcher import HooksWorker
from tests.api_helpers import running_api
from tests.flusher_helpers import drain, event, make_message, make_profiles, push
from tests.hook_helpers import SECRET, hook_settings, http_receiver
from tracker.hooks import committed_streams


def http_hook(url: str, **extra: object) -> dict:
    return {"name": "crm", "destination": {"type": "http", "url": url, "secret": SECRET, "timeout_s": 0.3, **extra}}


async def deliver(settings) -> HooksWorker:  # noqa: ANN001 -- the settings fixture
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

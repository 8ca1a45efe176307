"""What a hook selects (resources, profile fields) and what it can be sent again (replay from Postgres)."""

from __future__ import annotations

import datetime as dt
import random
import uuid

from forwarder.worker import HooksWorker
from tests.rigs.api_helpers import running_api
from tests.rigs.flusher_helpers import (
    drain,
    ensure_field,
    event,
    make_message,
    make_profiles,
    make_resource,
    now_us,
    push,
)
from tests.rigs.hook_helpers import hook_settings, http_receiver, no_hooks_left  # noqa: F401


def ids(events: list) -> set[str]:
    return {str(uuid.UUID(bytes=e.id)) for e in events}


async def test_filters_on_resource_and_profile_fields_select_with_one_lookup_per_batch(settings, redis, pg):
    settings = hook_settings(settings)
    await ensure_field(pg, "tier", "enum", ["gold", "silver"])
    newsletter = await make_resource(pg)
    in_list, elsewhere = await make_message(pg, resource_id=newsletter), await make_message(pg)
    gold, silver = await make_profiles(pg, 2)
    await pg.execute("""update profiles set fields = '{"tier": "gold"}' where id = $1""", gold)
    await pg.execute("""update profiles set fields = '{"tier": "silver"}' where id = $1""", silver)
    with http_receiver() as receiver:
        async with running_api(settings) as api:
            body = {"name": "gold clicks", "destination": {"type": "http", "url": receiver.url},
                    "filter": {"resource_ids": [newsletter], "profile_fields": {"tier": "gold"},
                               "channels": ["email"]}}  # fmt: skip
            assert (await api.call("POST", "/hooks", json=body)).status_code == 201
            wanted = [event(in_list, gold, "clicked"), event(in_list, gold, "opened")]
            others = [event(in_list, silver), event(elsewhere, gold), event(in_list, 0), event(in_list, 99_999_999)]
            await push(redis, settings, wanted + others)
            await drain(settings)
            await HooksWorker(settings, burst=True).run()
        assert {e["id"] for e in receiver.events()} == ids(wanted)


async def test_replay_sends_stored_events_of_a_time_range_or_a_message_to_one_hook_only(settings, redis, pg):
    settings = hook_settings(settings)
    message, other = await make_message(pg), await make_message(pg)
    # A second of its own, about an hour ago: the replay by time takes every event stored in it, and the
    # session's other tests store theirs in the same database (some of them an hour back too).
    start = now_us() - 3_600_000_000 - random.randrange(1, 3_000) * 1_000_000
    old = [event(message, p, ts_us=start + p) for p in range(1, 30)]
    old_other = [event(other, 1, ts_us=start + 100)]
    await push(redis, settings, old + old_other)
    await drain(settings)  # stored before any hook existed
    with http_receiver() as replayed, http_receiver() as bystander:
        async with running_api(settings) as api:
            lost = {"name": "lost data", "destination": {"type": "http", "url": replayed.url, "max_events": 10}}
            hook_id = (await api.call("POST", "/hooks", json=lost)).json()["id"]
            await api.call("POST", "/hooks", json={"name": "b", "destination": {"type": "http", "url": bystander.url}})
            by_message = await api.call("POST", f"/hooks/{hook_id}/replay", json={"message_id": message})
            job = by_message.json()
            assert by_message.status_code == 202 and (job["status"], job["queued"], job["hook_id"]) == (
                "queued", 0, hook_id)  # fmt: skip
            await HooksWorker(settings, burst=True).run()
            assert {e["id"] for e in replayed.events()} == ids(old) and not bystander.requests
            job = (await api.call("GET", f"/hooks/{hook_id}/replays/{job['id']}")).json()
            assert (job["status"], job["queued"], job["truncated"], job["error"]) == ("done", 29, False, None)
            assert job["started_at"] and job["finished_at"] and job["message_id"] == message

            since = dt.datetime.fromtimestamp(start / 1e6, dt.UTC)
            window = {"since": since.isoformat(), "until": (since + dt.timedelta(seconds=1)).isoformat()}
            by_time = (await api.call("POST", f"/hooks/{hook_id}/replay", json=window)).json()
            bad = await api.call("POST", f"/hooks/{hook_id}/replay", json={"since": since.isoformat()})
            assert bad.status_code == 422
            await HooksWorker(settings, burst=True).run()
            assert len(replayed.events()) == 29 + 30 and not bystander.requests
            jobs = (await api.call("GET", f"/hooks/{hook_id}/replays")).json()["replays"]
            assert [(j["id"], j["status"], j["queued"]) for j in jobs] == [(by_time["id"], "done", 30),
                                                                        (job["id"], "done", 29)]  # fmt: skip
            missing = await api.call("GET", f"/hooks/{hook_id}/replays/999999999")
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

"""What a stored event does to counters, profiles and subscriptions (flusher in burst mode, real services)."""

from __future__ import annotations

import datetime as dt
import json

from tests.rigs.flusher_helpers import (
    counters,
    drain,
    ensure_field,
    event,
    make_message,
    make_profiles,
    make_resource,
    now_us,
    push,
    stored_ids,
)
from tracker.domain.link_tables import Link

SECOND = 1_000_000


async def profile(pg, profile_id: int) -> dict:
    row = await pg.fetchrow("select * from profiles where id = $1", profile_id)
    result = dict(row)
    result["fields"] = json.loads(result["fields"])
    return result


async def subscription(pg, profile_id: int, resource_id: int) -> str | None:
    return await pg.fetchval(
        "select status from subscriptions where profile_id = $1 and resource_id = $2", profile_id, resource_id
    )


async def test_counters_count_totals_and_uniques_once_per_event_id(settings, redis, pg):
    a, b = await make_profiles(pg, 2)
    message = await make_message(pg)
    t0 = now_us() - 60 * SECOND
    opens = [event(message, a, "opened", ts_us=t0), event(message, a, "opened", ts_us=t0 + SECOND),
             event(message, b, "opened", ts_us=t0 + 2 * SECOND)]  # fmt: skip
    click = event(message, b, "clicked", link_index=0, ts_us=t0 + 3 * SECOND)
    await push(redis, settings, [*opens, click, opens[0], click])  # two retried writes
    await drain(settings)
    # A second run with the same events again (a replay) changes nothing.
    await push(redis, settings, [*opens, click])
    await drain(settings)

    assert sorted(await stored_ids(pg, [message])) == sorted(e.id for e in [*opens, click])
    assert await counters(pg, message) == {"opened": (3, 2), "clicked": (1, 1)}
    row = await pg.fetchrow(
        "select first_at, last_at, total from message_profile_stats where message_id = $1 and profile_id = $2"
        " and kind = 'opened'",
        message, a,
    )  # fmt: skip
    assert (row["total"], _us(row["first_at"]), _us(row["last_at"])) == (2, t0, t0 + SECOND)


async def test_a_batch_mixing_stored_and_new_events_stores_and_counts_only_the_new_ones(settings, redis, pg):
    # A batch with nothing stored goes in whole; one that meets a stored event dedupes row by row.
    a, b = await make_profiles(pg, 2)
    message = await make_message(pg)
    t0 = now_us() - 60 * SECOND
    first = event(message, a, "opened", ts_us=t0)
    await push(redis, settings, [first])
    await drain(settings)
    later = [event(message, a, "opened", ts_us=t0 + SECOND), event(message, b, "clicked", link_index=0,
                                                                   ts_us=t0 + 2 * SECOND)]  # fmt: skip
    await push(redis, settings, [later[0], first, later[1]])  # one entry: the stored event in the middle
    flusher = await drain(settings)

    assert (flusher.stats["stored"], flusher.stats["duplicates"]) == (2, 1)
    assert sorted(await stored_ids(pg, [message])) == sorted(e.id for e in [first, *later])
    assert await counters(pg, message) == {"opened": (2, 1), "clicked": (1, 1)}
    assert await pg.fetchval(
        "select total from message_profile_stats where message_id = $1 and profile_id = $2 and kind = 'opened'",
        message, a,
    ) == 2  # fmt: skip


async def test_anonymous_and_unknown_profiles_are_stored_without_effects(settings, redis, pg):
    (known,) = await make_profiles(pg, 1)
    message = await make_message(pg)
    missing_profile = known + 10_000_000
    events = [event(message, 0, "opened"), event(message, missing_profile, "opened"), event(message, known, "opened"),
              event(message, missing_profile, "hard_bounce")]  # fmt: skip
    await push(redis, settings, events)
    await drain(settings)

    assert sorted(await stored_ids(pg, [message])) == sorted(e.id for e in events)
    assert await counters(pg, message) == {"opened": (3, 1), "hard_bounce": (1, 0)}
    assert await pg.fetchval("select count(*) from message_profile_stats where message_id = $1", message) == 1


async def test_clicked_link_attributes_set_typed_fields_and_subscribe(settings, redis, pg):
    await ensure_field(pg, "clicked_link", "boolean")
    await ensure_field(pg, "score", "number")
    await ensure_field(pg, "birthday", "date")
    await ensure_field(pg, "tier", "enum", ["gold", "silver"])
    await ensure_field(pg, "source", "string")
    resource = await make_resource(pg)
    links = [
        Link("https://example.com/plain"),
        Link("https://example.com/a", {"update-clicked_link": "true", "update-score": "42.5",
                                        "update-birthday": "1990-02-28", "update-tier": "gold",
                                        "update-source": "spring sale", "subscribe-to": str(resource)}),
        Link("https://example.com/bad", {"update-score": "lots", "update-birthday": "1990-02-30",
                                          "update-tier": "bronze", "update-unknown_field": "x"}),
    ]  # fmt: skip
    message = await make_message(pg, links=links)
    a, b, c = await make_profiles(pg, 3)
    t0 = now_us() - 60 * SECOND
    await push(redis, settings, [
        event(message, a, "clicked", link_index=1, ts_us=t0),
        event(message, b, "clicked", link_index=2, ts_us=t0),
        event(message, c, "clicked", link_index=0, ts_us=t0),
        event(message, c, "opened", link_index=1, ts_us=t0),  # not a click: no effect
    ])  # fmt: skip
    await drain(settings)

    assert (await profile(pg, a))["fields"] == {
        "clicked_link": True, "score": 42.5, "birthday": "1990-02-28", "tier": "gold", "source": "spring sale",
    }  # fmt: skip
    assert await subscription(pg, a, resource) == "subscribed"
    # Values that do not fit the field's type, and unknown fields, are left out.
    assert (await profile(pg, b))["fields"] == {}
    assert (await profile(pg, c))["fields"] == {}
    assert await subscription(pg, c, resource) is None


async def test_an_older_click_does_not_overwrite_a_newer_field_value(settings, redis, pg):
    await ensure_field(pg, "tier", "enum", ["gold", "silver"])
    links = [Link("https://example.com/g", {"update-tier": "gold"}),
             Link("https://example.com/s", {"update-tier": "silver"})]  # fmt: skip
    message = await make_message(pg, links=links)
    (p,) = await make_profiles(pg, 1)
    t0 = now_us() - 60 * SECOND
    await push(redis, settings, [event(message, p, "clicked", link_index=1, ts_us=t0 + SECOND)])
    await drain(settings)
    await push(redis, settings, [event(message, p, "clicked", link_index=0, ts_us=t0)])  # late, older
    await drain(settings)
    assert (await profile(pg, p))["fields"] == {"tier": "silver"}

    await push(redis, settings, [event(message, p, "clicked", link_index=0, ts_us=t0 + 2 * SECOND)])
    await drain(settings)
    assert (await profile(pg, p))["fields"] == {"tier": "gold"}


async def test_unsubscribed_and_confirmed_act_on_the_message_resource_newest_first(settings, redis, pg):
    resource = await make_resource(pg)
    message = await make_message(pg, resource_id=resource)
    a, b, c = await make_profiles(pg, 3)
    await pg.execute(
        "insert into subscriptions (profile_id, resource_id, status, subscribed_at)"
        " values ($1, $2, 'pending', now() - interval '1 hour')",
        c, resource,
    )  # fmt: skip
    t0 = now_us() - 60 * SECOND
    await push(redis, settings, [
        event(message, a, "unsubscribed", ts_us=t0),
        event(message, b, "confirmed", ts_us=t0),
        event(message, b, "unsubscribed", ts_us=t0 + SECOND),
        event(message, c, "confirmed", ts_us=t0),
    ])  # fmt: skip
    await drain(settings)
    assert await subscription(pg, a, resource) == "unsubscribed"
    assert await subscription(pg, b, resource) == "unsubscribed"
    assert await subscription(pg, c, resource) == "subscribed"
    assert await pg.fetchval(
        "select confirmed_at is not null from subscriptions where profile_id = $1 and resource_id = $2", c, resource
    )

    # A confirm older than the unsubscribe (late delivery) does not resubscribe; a newer one does.
    await push(redis, settings, [event(message, b, "confirmed", ts_us=t0 + SECOND // 2)])
    await drain(settings)
    assert await subscription(pg, b, resource) == "unsubscribed"
    await push(redis, settings, [event(message, a, "confirmed", ts_us=t0 + 5 * SECOND)])
    await drain(settings)
    assert await subscription(pg, a, resource) == "subscribed"


async def test_hard_bounce_and_complaint_stop_email(settings, redis, pg):
    message = await make_message(pg)
    a, b, c = await make_profiles(pg, 3)
    t0 = now_us() - 60 * SECOND
    await push(redis, settings, [
        event(message, a, "hard_bounce", ts_us=t0),
        event(message, b, "hard_bounce", ts_us=t0),
        event(message, b, "complained", ts_us=t0 + SECOND),
        event(message, c, "delivered", ts_us=t0),
    ])  # fmt: skip
    await drain(settings)
    assert (await profile(pg, a))["email_status"] == "hard_bounced"
    assert _us((await profile(pg, a))["email_status_at"]) == t0
    assert (await profile(pg, b))["email_status"] == "complained"
    assert (await profile(pg, c))["email_status"] == "active"

    # A later hard bounce does not downgrade a complaint.
    await push(redis, settings, [event(message, b, "hard_bounce", ts_us=t0 + 9 * SECOND)])
    await drain(settings)
    assert (await profile(pg, b))["email_status"] == "complained"


async def test_sms_undelivered_is_recorded_on_the_phone_with_the_carrier_code(settings, redis, pg):
    message = await make_message(pg, channel="sms")
    a, b = await make_profiles(pg, 2)
    t0 = now_us() - 60 * SECOND
    await push(redis, settings, [
        event(message, a, "undelivered", channel="sms", ts_us=t0, data={"code": "30003"}),
        event(message, b, "undelivered", channel="sms", ts_us=t0, data={"code": "30005"}),
        event(message, b, "complained", channel="sms", ts_us=t0 + SECOND),
    ])  # fmt: skip
    await drain(settings)
    pa = await profile(pg, a)
    assert (pa["phone_status"], pa["phone_status_code"], _us(pa["phone_status_at"])) == ("undelivered", "30003", t0)
    assert (await profile(pg, b))["phone_status"] == "complained"
    assert pa["email_status"] == "active"

    # An older delivery report changes nothing; a newer one clears the failure.
    await push(redis, settings, [event(message, a, "delivered", channel="sms", ts_us=t0 - SECOND)])
    await drain(settings)
    assert (await profile(pg, a))["phone_status"] == "undelivered"
    await push(redis, settings, [event(message, a, "delivered", channel="sms", ts_us=t0 + SECOND)])
    await drain(settings)
    pa = await profile(pg, a)
    assert (pa["phone_status"], pa["phone_status_code"]) == ("active", None)


async def test_soft_bounces_escalate_at_the_limit_within_the_window(settings, redis, pg):
    message = await make_message(pg)
    inside, edge, outside, two = await make_profiles(pg, 4)
    window = 100
    t0 = now_us() - 3600 * SECOND
    span = window * SECOND
    plan = {
        inside: [t0, t0 + span // 2, t0 + span - 1],
        edge: [t0, t0 + span // 2, t0 + span],  # exactly the window apart: still within it
        outside: [t0, t0 + span // 2, t0 + span + 1],  # one microsecond too late
        two: [t0, t0 + 1],  # under the limit
    }
    # Pushed newest first, in separate runs, so escalation cannot depend on arrival order.
    for step in (2, 1, 0):
        await push(redis, settings, [event(message, p, "soft_bounce", ts_us=times[step])
                                     for p, times in plan.items() if step < len(times)])  # fmt: skip
        await drain(settings, soft_bounce_limit=3, soft_bounce_window_s=window)
    statuses = {p: (await profile(pg, p))["email_status"] for p in plan}
    assert statuses == {inside: "hard_bounced", edge: "hard_bounced", outside: "active", two: "active"}
    assert _us((await profile(pg, edge))["email_status_at"]) == t0 + span
    assert await counters(pg, message) == {"soft_bounce": (11, 4)}


def _us(value: dt.datetime) -> int:
    delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds

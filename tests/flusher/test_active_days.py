"""The days each profile was active on: written by the flusher, read by cohorts and `active_since`."""

from __future__ import annotations

import datetime as dt

from tests.rigs.flusher_helpers import drain, event, make_message, make_profiles, now_us, push
from tracker.contract.events import Event
from tracker.domain.analytics.active_days import ActiveDays
from tracker.domain.analytics.listing import profiles_page

HOUR = 3600 * 1_000_000
DAY = 24 * HOUR


def _day(ts_us: int) -> dt.date:
    return dt.datetime.fromtimestamp(ts_us / 1e6, dt.UTC).date()


async def _days(pg, profile_ids: list[int]) -> dict[int, list[dt.date]]:
    rows = await pg.fetch(
        "select profile_id, day from profile_active_days where profile_id = any($1::bigint[]) order by 1, 2",
        profile_ids,
    )
    found: dict[int, list[dt.date]] = {}
    for row in rows:
        found.setdefault(row["profile_id"], []).append(row["day"])
    return found


async def test_a_row_per_profile_and_day_of_the_persons_own_actions(settings, redis, pg) -> None:
    reader, recipient = await make_profiles(pg, 2)
    message = await make_message(pg)
    today = now_us()
    events = [
        event(message, reader, "opened", ts_us=today - 2 * DAY),
        event(message, reader, "opened", ts_us=today - 2 * DAY + 60_000_000),  # same day: one row
        event(message, reader, "clicked", link_index=0, ts_us=today - DAY),
        event(message, reader, "delivered", ts_us=today),  # done to them, not by them
        event(message, recipient, "delivered", ts_us=today - DAY),
    ]
    await push(redis, settings, events)
    first = await drain(settings)
    assert first.stats["stored"] == len(events)
    expected = {reader: [_day(today - 2 * DAY), _day(today - DAY)]}
    assert await _days(pg, [reader, recipient]) == expected

    # A later batch on a day already stored, and a new day, through a flusher that knows none of them.
    more = [event(message, reader, "read", ts_us=today - DAY + 1), event(message, recipient, "opened", ts_us=today)]
    await push(redis, settings, more + events[:2])  # with two retried writes
    await drain(settings)
    assert await _days(pg, [reader, recipient]) == {**expected, recipient: [_day(today)]}


async def test_active_since_is_exact_within_a_day(settings, redis, pg) -> None:
    early, late, idle = await make_profiles(pg, 3)
    message = await make_message(pg)
    now = now_us()
    # Two hours apart, on the same UTC day as far as the day rows can tell when run after 02:00.
    await push(redis, settings, [event(message, early, "opened", ts_us=now - 2 * HOUR),
                                 event(message, late, "clicked", link_index=0, ts_us=now - 60_000_000),
                                 event(message, idle, "delivered", ts_us=now - 60_000_000)])  # fmt: skip
    await drain(settings)
    since = dt.datetime.fromtimestamp((now - HOUR) / 1e6, dt.UTC)
    query = {"active_since": since.isoformat(), "after": str(min(early, late, idle) - 1), "limit": "10"}
    rows, _ = await profiles_page(pg, query, [], "p.id")
    assert [row["id"] for row in rows if row["id"] in (early, late, idle)] == [late]
    earlier = dict(query, active_since=dt.datetime.fromtimestamp((now - 3 * HOUR) / 1e6, dt.UTC).isoformat())
    rows, _ = await profiles_page(pg, earlier, [], "p.id")
    assert [row["id"] for row in rows if row["id"] in (early, late, idle)] == sorted([early, late])


def test_the_memory_skips_known_rows_and_stays_bounded() -> None:
    days = ActiveDays(known_max=3)
    events = _events(("opened", 1, 0), ("opened", 1, 5), ("clicked", 2, DAY), ("delivered", 3, 0), ("opened", 0, 0))
    pending = days.take(events)
    assert pending == [(1, 0), (2, 1)]  # one per profile and day; not `delivered`, not the anonymous profile
    days.stored(pending)
    assert days.take(events) == []
    # An attacker's flood of profiles and days cannot grow it past its bound: it forgets and re-sends.
    days.stored([(10, 0), (11, 0)])
    assert days.take(events) == [(1, 0), (2, 1)]


def test_a_pair_being_sent_is_left_to_its_batch_until_released() -> None:
    days = ActiveDays()
    first = days.take(_events(("opened", 1, 0), ("opened", 2, 0)))
    assert first == [(1, 0), (2, 0)]
    # A second batch writing at the same time leaves (1, 0) to the first: no wait on its uncommitted row.
    assert days.take(_events(("opened", 1, 5), ("opened", 3, 0))) == [(3, 0)]
    days.released(first)  # the first batch failed: its retry, or any batch, sends them
    assert days.take(_events(("clicked", 1, 9))) == [(1, 0)]
    days.stored([(1, 0)])
    assert days.take(_events(("opened", 1, 0), ("opened", 2, 0))) == [(2, 0)]


async def test_a_starting_flusher_learns_the_rows_stored_today(settings, redis, pg) -> None:
    (profile,) = await make_profiles(pg, 1)
    message = await make_message(pg)
    now = now_us()
    await push(redis, settings, [event(message, profile, "opened", ts_us=now)])
    await drain(settings)
    fresh = ActiveDays()
    assert fresh.take(_events(("opened", profile, now))) == [(profile, now // DAY)]
    fresh.released([(profile, now // DAY)])
    await fresh.learn_today(pg)
    assert fresh.take(_events(("opened", profile, now))) == []  # stored today already: not sent again
    assert fresh.take(_events(("opened", profile, now - DAY))) == [(profile, now // DAY - 1)]


def _events(*facts: tuple[str, int, int]) -> list[Event]:
    """Events of these (kind, profile, ts_us); the rest of each event does not matter here."""
    return [Event(bytes(16), kind, "email", 1, profile, ts_us) for kind, profile, ts_us in facts]

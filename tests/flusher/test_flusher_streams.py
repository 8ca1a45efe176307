"""The Redis side: dead letters, own pending entries, reclaiming, acknowledging and trimming."""

from __future__ import annotations

import msgspec

from tests.rigs.flusher_helpers import drain, event, make_message, make_profiles, push, push_raw, stored_ids
from tracker.contract.events import decode_event, encode_batch, encode_event
from tracker.contract.keys import CONSUMER_GROUP, ENTRY_FIELD, dead_letter_stream, event_stream, event_streams


async def dead_letters(redis, settings) -> list[dict]:
    return [fields for _id, fields in await redis.xrange(dead_letter_stream(settings.stream_prefix))]


async def pending_total(redis, settings) -> int:
    total = 0
    for stream in event_streams(settings.stream_prefix, settings.stream_shards):
        if await redis.exists(stream):
            total += (await redis.xpending(stream, CONSUMER_GROUP))["pending"]
    return total


async def test_bad_entries_and_events_go_to_dead_letters_and_the_rest_is_stored(settings, redis, pg):
    (p,) = await make_profiles(pg, 1)
    message = await make_message(pg)
    good = [event(message, p, "opened"), event(message, p, "clicked", link_index=0)]
    unknown_kind = event(message, p, "teleported")
    no_message = event(message + 10_000_000, p, "opened")
    bad_bytes = msgspec.msgpack.encode(["an array", "that is no Event"])
    # One entry mixing good and bad events: only the bad ones are set aside.
    mixed = encode_batch([encode_event(good[0]), bad_bytes, encode_event(unknown_kind), encode_event(no_message)])
    await push_raw(redis, settings, {ENTRY_FIELD: mixed})
    await push_raw(redis, settings, {ENTRY_FIELD: b"\xc1 not msgpack"})
    await push_raw(redis, settings, {b"other": b"x"})
    await push(redis, settings, [good[1]])
    flusher = await drain(settings)

    assert sorted(await stored_ids(pg, [message, no_message.message_id])) == sorted(e.id for e in good)
    letters = await dead_letters(redis, settings)
    reasons = sorted(letter[b"reason"].decode() for letter in letters)
    assert len(reasons) == 5, reasons
    assert any(r.startswith("undecodable event") for r in reasons)
    assert any(r.startswith("undecodable entry") for r in reasons)
    assert "no 'e' field in the entry" in reasons
    assert "unknown kind 'teleported'" in reasons
    assert f"message {no_message.message_id} does not exist" in reasons
    by_reason = {letter[b"reason"].decode().partition(":")[0]: letter for letter in letters}
    # The original bytes travel with the reason: the event's own, or the whole entry's.
    assert decode_event(by_reason["unknown kind 'teleported'"][b"e"]) == unknown_kind
    assert by_reason["undecodable event"][b"e"] == bad_bytes
    assert by_reason["undecodable entry"][b"e"] == b"\xc1 not msgpack"
    assert {letter[b"stream"] for letter in letters} == {event_stream(settings.stream_prefix, 0).encode()}
    assert flusher.stats["dead_lettered"] == 5
    assert await pending_total(redis, settings) == 0


async def test_a_restarted_consumer_first_takes_its_own_pending_entries(settings, redis, pg):
    (p,) = await make_profiles(pg, 1)
    message = await make_message(pg)
    events = [event(message, p, "opened") for _ in range(30)]
    await push(redis, settings, events, per_entry=10)
    stream = event_stream(settings.stream_prefix, p % settings.stream_shards)
    await redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
    # "worker-a" read the entries and died before committing them.
    await redis.xreadgroup(CONSUMER_GROUP, "worker-a", {stream: ">"}, count=100)
    assert await pending_total(redis, settings) == 3

    # Another consumer does not take them while they are fresh ...
    await drain(settings, consumer="worker-b", claim_idle_ms=600_000)
    assert await stored_ids(pg, [message]) == []
    # ... but worker-a, restarted under its name, reads its pending entries first.
    flusher = await drain(settings, consumer="worker-a", claim_idle_ms=600_000)
    assert sorted(await stored_ids(pg, [message])) == sorted(e.id for e in events)
    assert flusher.stats["events"] == 30
    assert await pending_total(redis, settings) == 0


async def test_entries_left_pending_by_a_dead_consumer_are_reclaimed_after_the_idle_time(settings, redis, pg):
    profiles = await make_profiles(pg, 8)
    message = await make_message(pg)
    events = [event(message, p, "opened") for p in profiles for _ in range(5)]
    await push(redis, settings, events, per_entry=2)
    for stream in event_streams(settings.stream_prefix, settings.stream_shards):
        await redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
        await redis.xreadgroup(CONSUMER_GROUP, "dead-one", {stream: ">"}, count=1000)
    assert await pending_total(redis, settings) > 0
    # Small XAUTOCLAIM pages, so the cursor has to be followed across calls.
    await drain(settings, consumer="survivor", claim_idle_ms=1, batch_max_events=3)
    assert sorted(await stored_ids(pg, [message])) == sorted(e.id for e in events)
    assert await pending_total(redis, settings) == 0
    for stream in event_streams(settings.stream_prefix, settings.stream_shards):
        consumers = {c["name"]: c["pending"] for c in await redis.xinfo_consumers(stream, CONSUMER_GROUP)}
        assert consumers.get(b"dead-one", 0) == 0


async def test_streams_are_trimmed_only_up_to_what_every_group_still_needs(settings, redis, pg):
    (p,) = await make_profiles(pg, 1)
    message = await make_message(pg)
    stream = event_stream(settings.stream_prefix, p % settings.stream_shards)
    first = [event(message, p, "opened") for _ in range(10)]
    await push(redis, settings, first, per_entry=1)
    # Another group (say, an action-hook consumer) has read 4 entries and acknowledged 2.
    await redis.xgroup_create(stream, "hooks", id="0")
    read = await redis.xreadgroup("hooks", "h1", {stream: ">"}, count=4)
    ids = [entry_id for entry_id, _ in read[0][1]]
    await redis.xack(stream, "hooks", ids[0], ids[1])
    await drain(settings)
    assert sorted(await stored_ids(pg, [message])) == sorted(e.id for e in first)
    # The oldest entry "hooks" still needs is its oldest pending one.
    remaining = [entry_id for entry_id, _ in await redis.xrange(stream)]
    assert remaining[0] == ids[2] and len(remaining) == 8

    await redis.xack(stream, "hooks", ids[2], ids[3])
    await push(redis, settings, [event(message, p, "clicked", link_index=0)], per_entry=1)
    await drain(settings)
    # Nothing pending in "hooks": entries up to its last delivered one go; undelivered ones stay.
    remaining = [entry_id for entry_id, _ in await redis.xrange(stream)]
    assert len(remaining) == 7 and remaining[0] > ids[3]

    await redis.xreadgroup("hooks", "h1", {stream: ">"}, count=1000)
    await redis.xack(stream, "hooks", *remaining)
    await push(redis, settings, [event(message, p, "read")], per_entry=1)
    newest = (await redis.xrevrange(stream, count=1))[0][0]
    await drain(settings)
    # Only the entry "hooks" has not been given yet is left.
    assert [entry_id for entry_id, _ in await redis.xrange(stream)] == [newest]


async def test_batches_close_on_count(settings, redis, pg):
    profiles = await make_profiles(pg, 4)
    message = await make_message(pg)
    events = [event(message, p, "opened") for p in profiles for _ in range(50)]
    await push(redis, settings, events, per_entry=5)
    flusher = await drain(settings, batch_max_events=40)
    assert flusher.stats["events"] == 200
    # Reads are sized to the room left, so a batch may overshoot by at most one read.
    assert flusher.stats["batches"] >= 200 // 60
    assert sorted(await stored_ids(pg, [message])) == sorted(e.id for e in events)


async def test_an_event_postgres_refuses_is_dead_lettered_alone(settings, redis, pg):
    (p,) = await make_profiles(pg, 1)
    message = await make_message(pg)
    good = [event(message, p, "opened") for _ in range(7)]
    # A NUL character cannot be stored in a Postgres text column.
    refused = event(message, p, "opened")
    refused = msgspec.structs.replace(refused, ua_class="bad\x00ua")
    await push(redis, settings, [*good[:3], refused, *good[3:]])
    flusher = await drain(settings)
    assert sorted(await stored_ids(pg, [message])) == sorted(e.id for e in good)
    (letter,) = await dead_letters(redis, settings)
    assert letter[b"reason"].startswith(b"postgres refused it")
    # As it came, plus the verdict it was given (judged again if it is ever replayed).
    assert msgspec.structs.replace(decode_event(letter[b"e"]), verdict="", reasons=()) == refused
    assert flusher.stats["dead_lettered"] == 1

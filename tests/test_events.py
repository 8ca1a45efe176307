"""Event ids and the batch wire format on the streams."""

from __future__ import annotations

import msgspec
import pytest

from tracker.contract.events import Event, EventIds, decode_batch, encode_batch, encode_event, split_batch


def test_ids_are_unique_time_ordered_and_uuidv7_shaped() -> None:
    ids = EventIds()
    made = [ids.new(now_ms=1_700_000_000_000 + i // 1000) for i in range(5000)]
    assert len(set(made)) == 5000
    assert made == sorted(made)
    for value in made[:10]:
        assert int.from_bytes(value[:6], "big") >= 1_700_000_000_000
        assert value[6] >> 4 == 7 and value[8] >> 6 == 0b10
    other = EventIds()
    assert not set(made) & {other.new(now_ms=1_700_000_000_000) for _ in range(1000)}


@pytest.mark.parametrize("count", [0, 1, 15, 16, 255, 65535, 65536])
def test_batches_round_trip_at_every_array_header_size(count: int) -> None:
    ids = EventIds()
    events = [
        Event(ids.new(), "opened", "email", 1, p, 10, data={"k": p} if p % 7 == 0 else None) for p in range(count)
    ]
    assert decode_batch(encode_batch([encode_event(e) for e in events])) == events


def test_a_bad_element_can_be_split_out_of_a_batch() -> None:
    ids = EventIds()
    good = [encode_event(Event(ids.new(), "clicked", "sms", 2, p, 10)) for p in range(3)]
    poison = msgspec.msgpack.encode(["not", "an", "event"])
    batch = encode_batch([good[0], poison, good[1], good[2]])
    with pytest.raises(msgspec.ValidationError):
        decode_batch(batch)
    parts = split_batch(batch)
    assert [bytes(p) for p in parts] == [good[0], poison, good[1], good[2]]

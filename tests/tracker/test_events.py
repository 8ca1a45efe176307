"""Event ids, the batch wire format on the streams, and the tuples the edge builds in place of Events."""

from __future__ import annotations

import re
from collections import Counter
from types import SimpleNamespace

import msgspec
import pytest

from edge.capture import Capture
from edge.reports.base import Report, report_event_id
from edge.reports.routes import ProviderReportRoutes
from tracker.contract.events import (
    EVENT_FIELDS,
    PROFILE_AT,
    Event,
    EventIds,
    decode_batch,
    decode_event,
    encode_batch,
    encode_event,
    split_batch,
)
from tracker.contract.tokens import EVENT_CHANNELS, Channel, Keyring, TokenKind, mint


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



def test_the_edges_tuples_encode_to_the_same_bytes_as_events() -> None:
    """Capture and the provider-report route build plain tuples, not Events: the same bytes must come out."""
    built: list[tuple] = []
    asked_ms: list[int] = []
    state = SimpleNamespace(
        events=SimpleNamespace(add=lambda record, size: built.append(record)),
        ids=SimpleNamespace(new=lambda now_ms: asked_ms.append(now_ms) or b"i" * 16),
        facts=SimpleNamespace(of=lambda scope: ("mobile", "ios", "203.0.113.0", 8)),
        settings=SimpleNamespace(signing_keys={1: b"k" * 32}),
    )
    Capture(state)("clicked", int(Channel.SMS), 11, 22, {}, 3, 4, {"k": "v"})  # type: ignore[arg-type]
    routes = ProviderReportRoutes.__new__(ProviderReportRoutes)  # the route's recording half, without providers
    routes.state, routes.keys, routes.counters = state, Keyring(state.settings.signing_keys), Counter()
    ref = mint(state.settings.signing_keys, 1, TokenKind.REF, Channel.EMAIL, 33, 44)
    routes.record("email", "generic", [Report("delivered", ref, "p-1", 1_700_000_000_000_000, {"code": "250"})])

    clicked, _ = built
    expected = [
        Event(id=b"i" * 16, kind="clicked", channel="sms", message_id=11, profile_id=22,
              ts_us=clicked[EVENT_FIELDS.index("ts_us")], link_version=3, link_index=4, ua_class="mobile",
              ip_prefix="203.0.113.0", data={"k": "v"}, signals=8, ua_family="ios"),
        Event(id=report_event_id("email", "generic", "p-1", 1_700_000_000_000_000, kind="delivered",
                                 recipient="33:44"), kind="delivered",
              channel="email", message_id=33, profile_id=44, ts_us=1_700_000_000_000_000, data={"code": "250"}),
    ]  # fmt: skip
    assert expected[0].ts_us // 1000 == asked_ms[0]
    # A builder may stop before the flusher's fields (verdict, reasons): they decode as defaults.
    assert len(built[0]) == EVENT_FIELDS.index("verdict")
    for record, event in zip(built, expected, strict=True):
        assert decode_event(encode_event(record)) == event
        assert record[PROFILE_AT] == event.profile_id
    assert decode_batch(encode_batch([encode_event(record) for record in built])) == expected


async def test_the_postgres_schema_allows_exactly_the_contracts_channels(pg) -> None:
    """The one place the channel names are spelled again: the schema's check constraints (migrations are SQL)."""
    for table in ("resources", "messages"):
        definition = await pg.fetchval(
            "select pg_get_constraintdef(oid) from pg_constraint"
            " where conrelid = $1::regclass and contype = 'c' and pg_get_constraintdef(oid) like '%channel%'",
            table,
        )
        assert set(re.findall(r"'(\w+)'::text", definition)) == set(EVENT_CHANNELS), (table, definition)

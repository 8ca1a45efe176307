"""One parser for every number a request carries: ASCII digits, one spelling, bounded; anything else is None."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.rigs.number_spellings import KNOWN, canonical, number_spellings
from tracker.contract.numbers import content_length, parse_int

_MANY = settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))


@_MANY
@given(number_spellings() | st.text(max_size=30))
def test_a_number_is_read_only_as_str_writes_it(text: str) -> None:
    value = parse_int(text, 0, 2**64)
    assert value is None or str(value) == text
    assert (value is not None) == canonical(text)


@_MANY
@given(st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1))
def test_bounds_are_inclusive_and_nothing_outside_them_is_read(n: int, low: int, high: int) -> None:
    low, high = min(low, high), max(low, high)
    assert parse_int(str(n), low, high) == (n if low <= n <= high else None)


def test_the_spellings_the_outside_run_found_are_refused() -> None:
    assert [text for text in KNOWN if parse_int(text, 0, 2**63 - 1) is not None] == []
    assert parse_int("9" * 19, 0, 10**19) == int("9" * 19)  # refused above only for its size
    assert parse_int("0", 0, 5) == 0 and parse_int("0", 1, 5) is None


@_MANY
@given(number_spellings() | st.text(max_size=30), st.integers(0, 2**40))
def test_a_content_length_is_ascii_digits_and_over_the_limit_however_long(text: str, limit: int) -> None:
    size = content_length(text, limit)
    if not (text and text.isascii() and text.isdigit()):
        assert size is None
    elif len(text.lstrip("0")) > 30:
        assert size == limit + 1
    else:
        assert size == min(int(text), limit + 1)

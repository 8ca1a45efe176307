"""Query parameters of the analytics reports: typed, bounded, and a 422 naming the parameter."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from tracker.contract.numbers import MAX_ID, parse_int
from tracker.domain.errors import InputError


def bad(name: str, problem: str) -> InputError:
    return InputError("invalid_parameter", f"query parameter {name}: {problem}")


def _given(query: Mapping[str, str], name: str) -> str | None:
    """The value, None when the parameter is absent; `name=` with nothing is an error, not a default."""
    raw = query.get(name)
    if raw == "":
        raise bad(name, "is empty (leave it out for the default)")
    return raw


def integer(query: Mapping[str, str], name: str, default: int | None, low: int = 1, high: int = MAX_ID) -> int | None:
    raw = _given(query, name)
    if raw is None:
        return default
    value = parse_int(raw, low, high)
    if value is None:
        raise bad(name, f"expected an integer from {low} to {high}, got {raw[:40]!r}")
    return value


def choice(query: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str | None) -> str | None:
    raw = _given(query, name)
    if raw is None:
        return default
    if raw not in allowed:
        raise bad(name, f"expected one of {', '.join(allowed)}, got {raw[:40]!r}")
    return raw


def moment(query: Mapping[str, str], name: str) -> dt.datetime | None:
    """An ISO 8601 date (midnight UTC) or date and time (UTC when no offset is given)."""
    raw = _given(query, name)
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise bad(name, f"expected an ISO 8601 date or time, e.g. 2024-05-01, got {raw[:40]!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    if not 1970 <= value.year <= 9000:
        raise bad(name, f"year {value.year} is out of range")
    return value


def time_range(
    query: Mapping[str, str], max_days: int, default_start: dt.datetime, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """[from, to) from the `from` and `to` parameters; at most `max_days` long (the setting)."""
    start, end = moment(query, "from"), moment(query, "to")
    span = dt.timedelta(days=max_days)
    if end is None:
        end = now if start is None else min(now, start + span)
    if start is None:
        start = max(default_start, end - span)
    if start >= end:
        raise bad("from", f"must be before to ({start.isoformat()} >= {end.isoformat()})")
    if end - start > span:
        raise bad("to", f"the range is longer than {max_days} days (TRACKER_ANALYTICS_MAX_RANGE_DAYS)")
    return start, end

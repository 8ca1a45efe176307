"""Whole numbers read from text we did not write: request paths, queries, headers, forms, tokens, link attributes.

Every such number goes through `parse_int`, which takes one spelling per value: the one `str(n)`
writes. `str.isdigit()` followed by `int()` is two mistakes at once: `isdigit()` is true for '²'
and other digits `int()` then refuses (a ValueError, so a 500), and `int()` itself takes other
scripts' digits ('١' is 1), full-width ones, signs, spaces, underscores and leading zeros, so a
signed value (a key id, an expiry) would verify under many spellings.
"""

from __future__ import annotations

MAX_ID = 2**63 - 1  # ids are Postgres bigints
MAX_VERSION = 2**31 - 1  # link-table versions are Postgres integers


def parse_int(text: str, low: int, high: int) -> int | None:
    """The integer `text` spells, if in [low, high] (0 <= low) and written as `str()` writes it; else None.

    ASCII digits only, no sign, space, underscore or leading zero ("0" itself aside). The length is
    checked before `int()`, which is quadratic in it (and refuses more than 4,300 digits).
    """
    if not text or len(text) > len(str(high)) or not text.isascii() or not text.isdigit():
        return None
    if text[0] == "0" and len(text) > 1:
        return None
    value = int(text)
    return value if low <= value <= high else None


def content_length(text: str, limit: int) -> int | None:
    """A Content-Length as HTTP spells it (ASCII digits, leading zeros allowed): its value, `limit + 1` for
    any value over `limit` however long, None for anything that is not a length.

    Leading zeros are HTTP's own: the value is only compared with a limit, never signed or echoed.
    """
    if not text or not text.isascii() or not text.isdigit():
        return None
    value = parse_int(text.lstrip("0") or "0", 0, limit)
    return limit + 1 if value is None else value

"""Integer arrays for Postgres as one text value: what the flusher sends for every batch.

asyncpg encodes a Python list parameter element by element, with type checks for each
(about 0.4 us an element); a batch sends tens of thousands. As array text ("{1,2,3}") the
list is one string, joined in C, and Postgres parses it in C: `$1::text::bigint[]` in the SQL
(the `::text` makes the parameter a string for asyncpg).
"""

from __future__ import annotations

from collections.abc import Iterable


def int_array(values: Iterable[int]) -> str:
    """`{1,2,3}`: integers only (an int's text never holds a comma or a brace)."""
    return "{" + ",".join(map(str, values)) + "}"

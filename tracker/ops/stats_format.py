"""Small formatting helpers of the ops views (`tracker stats`): tables, ages, sizes, stream ids."""

from __future__ import annotations

import json
from typing import Any

# MEMORY USAGE of a stream looks at this many of its nodes and extrapolates: its cost stays flat as streams grow.
MEMORY_SAMPLES = 5


def table(rows: list[tuple[str, ...]], right: set[int]) -> list[str]:
    """Aligned columns under a ruled header row; `right` holds the indexes of right-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [cell.rjust(width) if i in right else cell.ljust(width) for i, (cell, width) in pairs]
        out.append("  " + "  ".join(cells).rstrip())
        if n == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    return out


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def bytes_human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def entry_age_s(now_ms: float, entry_id: bytes | str | None) -> float | None:
    """Age of a stream entry on Redis' clock: its id starts with Redis' milliseconds."""
    if not entry_id:
        return None
    ms = int(text(entry_id).split("-", 1)[0])
    return round(max(0.0, (now_ms - ms) / 1000), 3)


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value

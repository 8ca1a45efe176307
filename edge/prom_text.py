"""Prometheus text lines for values read from Redis snapshots (flushers, hooks workers)."""

from __future__ import annotations


def escape(value: object) -> str:
    # Prometheus label values: backslash, double quote and newline are escaped.
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def sample(name: str, labels: dict[str, object], value: float) -> str:
    text = ",".join(f'{key}="{escape(v)}"' for key, v in labels.items())
    return f"{name}{{{text}}} {float(value)}"

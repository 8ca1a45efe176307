"""Request facts the edge keeps on each event for the human-or-machine verdict.

The edge reads them from the request it is answering anyway (method and a few
headers), at no extra I/O; the flusher judges from them (tracker.domain.verdicts),
and `tracker reclassify` judges the stored ones again when the rules change.
A bit is only ever added, never renumbered: stored events keep their meaning.
"""

from __future__ import annotations

HEAD = 1 << 0  # a HEAD request: link checkers and scanners, never a person's click
PREFETCH = 1 << 1  # Purpose / Sec-Purpose / X-Moz: prefetch (a browser or proxy fetching ahead)
NO_ACCEPT = 1 << 2  # no Accept header at all (HTTP libraries; every browser sends one)
NAVIGATE = 1 << 3  # Sec-Fetch-Mode: navigate (a browser loading a page)
USER_ACTIVATED = 1 << 4  # Sec-Fetch-User: ?1 (the navigation came from a person's gesture)
ACCEPTS_HTML = 1 << 5  # Accept names text/html (a page load, not an image fetch)

NAMES = {HEAD: "head", PREFETCH: "prefetch", NO_ACCEPT: "no_accept", NAVIGATE: "navigate",
         USER_ACTIVATED: "user_activated", ACCEPTS_HTML: "accepts_html"}  # fmt: skip


def names(signals: int) -> list[str]:
    """The names of the bits set, for people and documents."""
    return [name for bit, name in NAMES.items() if signals & bit]

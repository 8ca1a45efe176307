"""Rate-limited logging for errors that repeat: one line per state change, then at most one per interval.

A full or failing spool, an unreachable Redis or a failing offset save can happen
for every batch, hundreds of times a second. `LogLimiter.log` writes the first
line of a kind at once, then at most one line per `every_s` seconds, carrying the
count of the lines it suppressed in between; `reset` marks a state change (the
condition cleared), so the next occurrence is logged at once again and the lines
still suppressed are reported with the reset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable


class LogLimiter:
    __slots__ = ("_last", "_suppressed", "every_s", "logger")

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self.logger = logger
        self.every_s = every_s
        self._last: dict[Hashable, float] = {}  # key -> when its last line was written
        self._suppressed: dict[Hashable, int] = {}  # key -> lines not written since

    def log(self, level: int, key: Hashable, msg: str, *args: object) -> bool:
        """Log `msg % args` unless a line of `key` was written less than `every_s` ago; True if written."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d more like this in the last %.0fs)"
            args = (*args, suppressed, now - last if last is not None else 0.0)
        self._last[key] = now
        self.logger.log(level, msg, *args)
        return True

    def active(self, key: Hashable) -> bool:
        """Whether `key` has logged since its last reset (its condition is going on)."""
        return key in self._last

    def reset(self, key: Hashable, level: int = logging.WARNING, msg: str = "", *args: object) -> None:
        """The condition of `key` ended: log `msg` (if given and the condition had been logged), start afresh."""
        last = self._last.pop(key, None)
        suppressed = self._suppressed.pop(key, 0)
        if last is None or not msg:
            return
        if suppressed:
            msg += " (%d more lines of it were not logged)"
            args = (*args, suppressed)
        self.logger.log(level, msg, *args)

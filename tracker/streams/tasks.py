"""Waits that end: every wait of a shutdown has a timeout, and none relies on a cancellation being honoured.

redis-py can swallow a cancellation that lands inside a command (on Python 3.11,
`asyncio.wait_for` inside `send_packed_command`), so a task cancelled there may
carry on; `asyncio.wait_for` would then wait for it forever. These helpers use
`asyncio.wait`, which returns at its timeout whatever the task does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")
_log = logging.getLogger("tracker.streams")


class TimedOut(Exception):
    """`bounded` gave up waiting."""


async def bounded(work: Awaitable[T], timeout_s: float) -> T:
    """`work`'s result, or `TimedOut` after `timeout_s` (the work is cancelled and left to end on its own)."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        task.add_done_callback(_consume)
        raise TimedOut(f"gave up after {timeout_s:.1f}s")
    return task.result()


async def stop_tasks(tasks: Iterable[asyncio.Future], timeout_s: float, *, what: str = "tasks",
                     log: logging.Logger = _log, cancel: bool = True) -> set[asyncio.Future]:  # fmt: skip
    """Cancel `tasks` (unless `cancel` is false) and wait at most `timeout_s` for them to end.

    Returns those still running, which are left behind (a warning says so). Exceptions of the
    ended ones are retrieved here, not raised: the caller looks at them if it cares.
    """
    pending = {task for task in tasks if task is not None}
    if not pending:
        return set()
    if cancel:
        for task in pending:
            task.cancel()
    _done, late = await asyncio.wait(pending, timeout=timeout_s)
    for task in pending:
        task.add_done_callback(_consume)
    if late:
        for task in late:
            task.cancel()
        log.warning("%d of the %s did not stop within %.1fs; leaving them behind", len(late), what, timeout_s)
    return late


def _consume(task: asyncio.Future) -> None:
    """Retrieve a finished task's exception, so that asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()

"""How many entries of a stream a consumer group has not been given yet, on every Redis version.

Redis 7 reports it as the group's `lag` (XINFO GROUPS). Redis 6.2, which the
embedded server of `tracker run` and the tests is, does not, nor does Redis 7
after a trim past the group. Then a script counts where it is cheap: the
stream's length less the entries still held up to the group's last-delivered
id (few on an event stream: the pending ones, until the trim), else the
entries past that id, each up to a cap. No entry crosses the network. When
both are over the cap the answer is unknown (None).
"""

from __future__ import annotations

from typing import Any

# Entries counted at most each way: a bounded amount of work for the server per group and read.
COUNT_UP_TO = 10_000

# KEYS[1] the stream, ARGV[1] the group's last-delivered id, ARGV[2] the cap; -1 when unknown.
UNREAD_SCRIPT = """
local cap = tonumber(ARGV[2])
local held = redis.call('XRANGE', KEYS[1], '-', ARGV[1], 'COUNT', cap + 1)
if #held <= cap then return redis.call('XLEN', KEYS[1]) - #held end
local unread = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', cap + 1)
if #unread <= cap then return #unread end
return -1
"""


def queue_unread(pipe: Any, stream: str | bytes, group: dict[str, Any]) -> bool:
    """Queue the count for `group` (an XINFO GROUPS reply) on `pipe` when Redis does not give it; True if queued."""
    if isinstance(group.get("lag"), int):
        return False
    pipe.eval(UNREAD_SCRIPT, 1, stream, group["last-delivered-id"], COUNT_UP_TO)
    return True


def unread_of(group: dict[str, Any], counted: Any = None) -> int | None:
    """The group's unread entries: Redis 7's lag, else the script's count; None when it cannot be told."""
    if isinstance(group.get("lag"), int):
        return group["lag"]
    return counted if isinstance(counted, int) and counted >= 0 else None

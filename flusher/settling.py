"""The settle pass: clicks whose settle window is over get their profile effects, then go to the hooks.

A click is stored at once (counters included) but its link attributes and its action-hook
delivery wait `FLUSHER_SETTLE_S` in `settling_clicks`, so that a burst or a honeypot fetch
arriving meanwhile can still make it a machine's (flusher.judging). One transaction takes the
due clicks (skip locked: several flushers share the table), applies the effects of those whose
verdict allows them, puts them on the committed streams and marks them forwarded, then commits.
The streams are written before the commit: a commit that fails leaves the clicks waiting, so the
next pass applies their effects (once: the failed transaction applied nothing) and forwards them
again (at least once, as every action-hook delivery). One write per click after its insert.
Forwarded rows stay a while as the history the burst and honeypot rules read.
"""

from __future__ import annotations

import time

import asyncpg
import msgspec

from flusher.committed import CommittedFeed
from flusher.effects import ATTRIBUTE_EFFECTS, LINK_ATTRIBUTES
from tracker.config import Settings
from tracker.contract.events import Event, decode_event
from tracker.domain.verdicts import HUMAN, UNKNOWN, rules_of

_TAKE = """
with due as (
    select event_id, ts, state from settling_clicks
    where state <> 'forwarded' and due_at <= now()
    order by due_at limit $1
    for update skip locked
), taken as (
    update settling_clicks c set state = 'forwarded'
    from due where c.event_id = due.event_id and c.ts = due.ts
    returning c.event_id, c.ts, c.message_id, c.profile_id, c.link_version, c.link_index, c.verdict, c.reasons,
              c.event, due.state as was
), fresh as (
    -- `applied`: left by an earlier version of the flusher, effects done, only forwarding was due
    insert into flush_settled (event_id, ts, message_id, profile_id, link_version, link_index, verdict, event)
    select event_id, ts, message_id, profile_id, link_version, link_index, verdict, event
    from taken where was = 'waiting'
)
select event_id, ts, verdict, reasons, event from taken
"""
_FORGET = "delete from settling_clicks where state = 'forwarded' and ts < now() - $1 * interval '1 second'"
SETTLE_BATCH = 5000
_FORGET_EVERY_S = 60.0


class Settler:
    def __init__(self, settings: Settings, feed: CommittedFeed) -> None:
        self.feed = feed
        flusher = settings.flusher
        self.allowed = [HUMAN, UNKNOWN] if flusher.effects_for_unknown else [HUMAN]
        # The rules look this far back; a settle window and a margin on top.
        self.keep_s = rules_of(flusher).history_us / 1e6 + flusher.settle_s + 600
        self._forgot_at = time.monotonic()
        self.settled = 0

    async def settle(self, conn: asyncpg.Connection) -> int:
        """One pass over what is due; returns how many clicks it took (call again while it is a full batch)."""
        async with conn.transaction():
            rows = await conn.fetch(_TAKE, SETTLE_BATCH)
            if rows:
                await conn.execute(LINK_ATTRIBUTES, self.allowed)
                await conn.execute(ATTRIBUTE_EFFECTS)
                events: list[Event] = [
                    msgspec.structs.replace(decode_event(row["event"]), verdict=row["verdict"],
                                            reasons=tuple(row["reasons"]))
                    for row in rows
                ]  # fmt: skip
                # Before the commit: a failure here rolls the effects back and the clicks stay due.
                await self.feed.forward_events(events)
        self.settled += len(rows)
        if time.monotonic() - self._forgot_at >= _FORGET_EVERY_S:
            self._forgot_at = time.monotonic()
            await conn.execute(_FORGET, self.keep_s)
        return len(rows)

"""The settle pass: clicks whose settle window is over get their profile effects, then go to the hooks.

A click is stored at once (counters included) but its link attributes and its action-hook
delivery wait `FLUSHER_SETTLE_S` in `settling_clicks`, so that a burst or a honeypot fetch
arriving meanwhile can still make it a machine's (flusher.judging). One transaction takes the
due clicks (skip locked: several flushers share the table), applies the effects of those whose
verdict allows them and marks them applied; after the commit they go to the committed streams
and are marked forwarded. A flusher that dies in between leaves them `applied` with a retry
time: they are forwarded again (at least once, as every action-hook delivery), never applied
twice. Forwarded rows stay a while as the history the burst and honeypot rules read.
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
    update settling_clicks c set state = 'applied', due_at = now() + $2 * interval '1 second'
    from due where c.event_id = due.event_id and c.ts = due.ts
    returning c.event_id, c.ts, c.profile_id, c.verdict, c.reasons, c.event, due.state as was
), fresh as (
    insert into flush_settled (event_id, ts, profile_id, verdict, reasons, event)
    select event_id, ts, profile_id, verdict, reasons, event from taken where was = 'waiting'
)
select event_id, ts, verdict, reasons, event from taken
"""
_FORWARDED = """
update settling_clicks c set state = 'forwarded'
from unnest($1::uuid[], $2::timestamptz[]) as f(event_id, ts)
where c.event_id = f.event_id and c.ts = f.ts
"""
_FORGET = "delete from settling_clicks where state = 'forwarded' and ts < now() - $1 * interval '1 second'"
SETTLE_BATCH = 5000
_REFORWARD_AFTER_S = 60.0  # an applied click not marked forwarded by then is forwarded again
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
            rows = await conn.fetch(_TAKE, SETTLE_BATCH, _REFORWARD_AFTER_S)
            if rows:
                await conn.execute(LINK_ATTRIBUTES, self.allowed)
                await conn.execute(ATTRIBUTE_EFFECTS)
        if rows:
            events: list[Event] = [
                msgspec.structs.replace(decode_event(row["event"]), verdict=row["verdict"],
                                        reasons=tuple(row["reasons"]))
                for row in rows
            ]  # fmt: skip
            await self.feed.forward_events(events)
            await conn.execute(_FORWARDED, [row["event_id"] for row in rows], [row["ts"] for row in rows])
            self.settled += len(rows)
        if time.monotonic() - self._forgot_at >= _FORGET_EVERY_S:
            self._forgot_at = time.monotonic()
            await conn.execute(_FORGET, self.keep_s)
        return len(rows)

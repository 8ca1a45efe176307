"""The UTC days on which each profile did something itself: what cohorts and "active since" read.

The flusher writes one `profile_active_days` row per profile and day, in the batch's transaction.
Most events of a day fall on a (profile, day) row that exists already, so the flusher remembers
the rows it has stored and sends only the others: a row it forgot, or one another flusher wrote,
is sent again and `on conflict do nothing` keeps one. The memory is bounded and only ever skips
rows that are known to be in Postgres, or that a batch of the same flusher is committing now.

That last part matters for speed, not correctness: a flusher writes a few batches at once, and an
insert that meets a row another open transaction inserted waits for that transaction to end. Two
batches sharing one (profile, day) pair would run one after the other. The pair is sent by the
batch that took it first; if that batch fails, the pair is released and sent by its retry (the
same events), so the row is in Postgres exactly when an event of that profile and day is.
Two flushers reading the same shards share no memory and meet the same rows: the sink sends the
day rows as its transaction's last statement, so such a wait lasts only the other batch's commit.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from tracker.contract.events import Event
from tracker.domain.pg_arrays import int_array

# What the person did (not what was done to them): opens, reads, clicks, site actions.
ACTIVE_KINDS = frozenset({"opened", "read", "clicked", "push_opened", "push_clicked", "site_action"})
_US_PER_DAY = 86_400 * 1_000_000
_KNOWN_MAX = 2_000_000  # about 150 MB at most; forgetting costs a re-sent row, nothing else

# A flusher that starts mid-day learns today's rows first: else it would send again the day row of
# every profile it meets (bounded: at most half the memory; what is left out is sent and skipped).
KNOWN_TODAY = """
select profile_id, day - date '1970-01-01' as day from profile_active_days
where day = (now() at time zone 'UTC')::date
limit $1
"""

INSERT = """
insert into profile_active_days (profile_id, day)
select profile_id, date '1970-01-01' + day from unnest($1::text::bigint[], $2::text::int[]) as t(profile_id, day)
order by 1, 2
on conflict do nothing
"""


class ActiveDays:
    def __init__(self, known_max: int = _KNOWN_MAX) -> None:
        self._known: set[tuple[int, int]] = set()
        self._sending: set[tuple[int, int]] = set()  # taken by a batch being committed
        self._known_max = known_max
        self._learnt = False

    def take(self, events: Iterable[Event]) -> list[tuple[int, int]]:
        """(profile, day number) pairs of these events neither known to be stored nor being sent by
        another batch; the caller sends them, then says `stored` or `released`."""
        found = {(e.profile_id, e.ts_us // _US_PER_DAY) for e in events if e.profile_id and e.kind in ACTIVE_KINDS}
        found -= self._known
        found -= self._sending
        self._sending |= found
        return sorted(found)

    def released(self, pairs: list[tuple[int, int]]) -> None:
        """The batch that took these did not commit: its retry (or another batch) sends them."""
        self._sending.difference_update(pairs)

    async def learn_today(self, conn: asyncpg.Connection) -> None:
        """Remember the day rows stored today already (by this flusher's earlier life, or another);
        once: the sinks sharing this memory each call it as they connect."""
        if self._learnt:
            return
        self._learnt = True  # before the wait: a second sink connecting meanwhile does not read them again
        try:
            rows = await conn.fetch(KNOWN_TODAY, self._known_max // 2)
        except BaseException:
            self._learnt = False
            raise
        self.stored([(row["profile_id"], row["day"]) for row in rows])

    def stored(self, pairs: list[tuple[int, int]]) -> None:
        """After the commit: these rows are in Postgres."""
        self._sending.difference_update(pairs)
        if len(self._known) + len(pairs) > self._known_max:
            self._known.clear()
        self._known.update(pairs)


def as_arrays(pairs: list[tuple[int, int]]) -> tuple[str, str]:
    """Profiles and day numbers (days since 1970-01-01), as INSERT's two array parameters."""
    return int_array(p for p, _ in pairs), int_array(d for _, d in pairs)

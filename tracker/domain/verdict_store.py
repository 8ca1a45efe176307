"""The verdict's Postgres side: the history the rules read, and changing stored verdicts exactly.

Shared by the flusher (judging a batch; turning earlier clicks into a machine's when a burst or a
honeypot shows up) and `tracker reclassify`. A change updates the event row and every counter
derived from it (per profile, per message with uniques, per reason) by deltas, in the caller's
transaction, so a change applied once is applied once, and judging again finds nothing to change.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from dataclasses import dataclass

import asyncpg

from tracker.domain.analytics.verdict_rollups import APPLY_ROLLUPS
from tracker.domain.pg_arrays import int_array
from tracker.domain.verdicts import Click

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
HONEYPOT_ATTRIBUTE = "tracker-honeypot"


def micros(at: dt.datetime) -> int:
    return (at - _EPOCH) // dt.timedelta(microseconds=1)


def moment(ts_us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=ts_us)


async def record_renders(conn: asyncpg.Connection, message_id: int, profile_ids: list[int]) -> None:
    """When a message was rendered for each profile: the `too fast` rule's first reference."""
    if profile_ids:
        await conn.execute(
            "insert into message_renders (message_id, profile_id, rendered_at)"
            " select $1, p, now() from unnest($2::bigint[]) p order by p"
            " on conflict (message_id, profile_id) do update set rendered_at = excluded.rendered_at",
            message_id, profile_ids,
        )  # fmt: skip


async def reference_times(conn: asyncpg.Connection, pairs: set[tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
    """(message, profile) -> the render, send and delivery times known (microseconds)."""
    pairs = {pair for pair in pairs if pair[1] != 0}
    if not pairs:
        return {}
    messages, profiles = [p[0] for p in pairs], [p[1] for p in pairs]
    # Lateral: one index probe per pair. A plain join let the planner sort the whole stats table
    # for each batch (it cannot tell how many pairs the arrays hold).
    rows = await conn.fetch(
        """
        select w.message_id, w.profile_id, (extract(epoch from t.a) * 1000000)::int8,
               (extract(epoch from t.b) * 1000000)::int8  -- microseconds: no datetime object per value
        from unnest($1::text::bigint[], $2::text::bigint[]) as w(message_id, profile_id)
        cross join lateral (
            select s.first_at as a, s.last_at as b from message_profile_stats s
            where s.message_id = w.message_id and s.profile_id = w.profile_id and s.kind in ('sent', 'delivered')
            union all
            select r.rendered_at, r.rendered_at from message_renders r
            where r.message_id = w.message_id and r.profile_id = w.profile_id
        ) t
        """,
        int_array(messages), int_array(profiles),
    )  # fmt: skip
    found: dict[tuple[int, int], list[int]] = defaultdict(list)
    for message_id, profile_id, first, last in rows:
        found[message_id, profile_id] += (first, last)
    return found


async def honeypot_links(conn: asyncpg.Connection, versions: set[tuple[int, int]]) -> set[tuple[int, int, int]]:
    """(message, version, index) of the honeypot links among these link-table versions."""
    if not versions:
        return set()
    rows = await conn.fetch(
        "select message_id, version, idx from links"
        " where (message_id, version) in (select * from unnest($1::bigint[], $2::int[])) and attributes ? $3",
        [v[0] for v in versions], [v[1] for v in versions], HONEYPOT_ATTRIBUTE,
    )  # fmt: skip
    return {(r["message_id"], r["version"], r["idx"]) for r in rows}


@dataclass(frozen=True, slots=True)
class StoredClick:
    click: Click
    ts: dt.datetime
    verdict: str
    reasons: tuple[str, ...]


async def recent_clicks(
    conn: asyncpg.Connection, sources: set[tuple[int, str]], low_us: int, high_us: int
) -> list[StoredClick]:
    """Clicks stored recently (the settling table's history) from these (message, IP prefix) sources."""
    if not sources:
        return []
    rows = await conn.fetch(
        """
        select c.event_id, c.ts, c.message_id, c.ip_prefix, c.link_version, c.link_index, c.verdict, c.reasons
        from unnest($1::bigint[], $2::text[]) as w(message_id, ip_prefix)
        cross join lateral (  -- an index probe per source (settling_clicks_neighbours)
            select * from settling_clicks c
            where c.message_id = w.message_id and c.ip_prefix = w.ip_prefix and c.ts between $3 and $4
        ) c
        """,
        [s[0] for s in sources], [s[1] for s in sources], moment(low_us), moment(high_us),
    )  # fmt: skip
    return [
        StoredClick(Click(r["event_id"], micros(r["ts"]), r["message_id"], r["ip_prefix"],
                          (r["link_version"], r["link_index"])), r["ts"], r["verdict"], tuple(r["reasons"]))
        for r in rows
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Change:
    id: bytes
    ts: dt.datetime
    verdict: str
    reasons: tuple[str, ...]


_CHANGES = """
create temp table if not exists verdict_changes (
    id uuid, ts timestamptz, message_id bigint, profile_id bigint, kind text,
    old_verdict text, old_reasons text[], new_verdict text, new_reasons text[]
) on commit delete rows;
delete from verdict_changes;
"""

_FIND = """
insert into verdict_changes
select e.id, e.ts, e.message_id, e.profile_id, e.kind, e.verdict, e.reasons, i.verdict,
       string_to_array(i.reasons, ',')
from unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[]) as i(id, ts, verdict, reasons)
join events e on e.id = i.id::uuid and e.ts = i.ts
where e.verdict <> i.verdict or e.reasons <> string_to_array(i.reasons, ',')
order by e.id
"""

_APPLY = """
update events e set verdict = c.new_verdict, reasons = c.new_reasons
from verdict_changes c where e.id = c.id and e.ts = c.ts;

update settling_clicks s set verdict = c.new_verdict, reasons = c.new_reasons
from verdict_changes c where s.event_id = c.id and s.ts = c.ts;

with deltas as (
    select message_id, profile_id, kind,
           sum((new_verdict = 'human')::int - (old_verdict = 'human')::int) as dh,
           sum((new_verdict = 'machine')::int - (old_verdict = 'machine')::int) as dm
    from verdict_changes where profile_id <> 0 group by 1, 2, 3
), stats as (
    update message_profile_stats s set human = s.human + d.dh, machine = s.machine + d.dm
    from (select * from deltas order by 1, 2, 3) d
    where s.message_id = d.message_id and s.profile_id = d.profile_id and s.kind = d.kind
    returning s.message_id, s.kind, s.human, s.machine, d.dh, d.dm
), uniques as (
    select message_id, kind,
           sum(case when human > 0 and human = dh then 1 when human = 0 and dh < 0 then -1 else 0 end) as uh,
           sum(case when machine > 0 and machine = dm then 1 when machine = 0 and dm < 0 then -1 else 0 end) as um
    from stats group by 1, 2
), totals as (
    select message_id, kind,
           sum((new_verdict = 'human')::int - (old_verdict = 'human')::int) as dh,
           sum((new_verdict = 'machine')::int - (old_verdict = 'machine')::int) as dm
    from verdict_changes group by 1, 2
)
update message_counters c set
    human = c.human + t.dh, machine = c.machine + t.dm,
    human_uniques = c.human_uniques + coalesce(u.uh, 0), machine_uniques = c.machine_uniques + coalesce(u.um, 0)
from totals t left join uniques u using (message_id, kind)
where c.message_id = t.message_id and c.kind = t.kind;

insert into message_verdict_reasons as r (message_id, kind, verdict, reason, total)
select message_id, kind, verdict, reason, sum(delta) from (
    select message_id, kind, new_verdict as verdict, unnest(new_reasons) as reason, 1 as delta from verdict_changes
    union all
    select message_id, kind, old_verdict, unnest(old_reasons), -1 from verdict_changes
) x
group by 1, 2, 3, 4 order by 1, 2, 3, 4
on conflict (message_id, kind, verdict, reason) do update set total = r.total + excluded.total;
"""


# Every statement a verdict change runs, in order: what a table split by verdict must appear in
# (tests/flusher/test_verdict_paths.py finds such tables in the schema and checks).
CHANGE_STATEMENTS = (_APPLY, APPLY_ROLLUPS)


async def change_verdicts(conn: asyncpg.Connection, changes: list[Change]) -> int:
    """Apply verdict changes and their counter deltas (inside the caller's transaction); returns how
    many events really changed (those already so are skipped, which makes applying twice harmless)."""
    if not changes:
        return 0
    await conn.execute(_CHANGES)
    # Ids as text: the flusher's connections read uuids as bytes, the CLI's as uuid.UUID.
    status = await conn.execute(
        _FIND, [str(uuid.UUID(bytes=c.id)) for c in changes], [c.ts for c in changes], [c.verdict for c in changes],
        [",".join(c.reasons) for c in changes],
    )  # fmt: skip
    changed = int(status.rsplit(" ", 1)[-1])
    if changed:
        for statements in CHANGE_STATEMENTS:  # the rollups' share last: the reports' hourly and per-link splits
            await conn.execute(statements)
    return changed

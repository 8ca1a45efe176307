"""The analytics rollups of one batch, from `flush_new` (the batch's new events) only.

They run in the batch's transaction with the counters (flusher.effects), so an event is in the
rollups exactly when it is in `events`. Rows are written in key order, like the counters, so two
flushers lock shared rows in the same order. What each table holds: migration 0008.

`PROFILE_ACTIVITY` must run before the counters: it tells a profile's first event of a kind for a
message from the absence of its `message_profile_stats` row, which the counters then write.
"""

from __future__ import annotations

# Kinds that are the person's own doing (a profile's activity), and the kinds counted per message.
ACTIVE_KINDS = ("opened", "read", "clicked", "push_opened", "push_clicked", "site_action")
_RECEIVED = "array['sent', 'delivered', 'push_delivered']"
_OPENED = "array['opened', 'push_opened']"
_CLICKED = "array['clicked', 'push_clicked']"
_ACTIVE = "array[" + ", ".join(f"'{k}'" for k in ACTIVE_KINDS) + "]"

HOURLY = """
insert into message_hourly as h (message_id, kind, hour, verdict, total)
select message_id, kind, date_trunc('hour', ts, 'UTC'), verdict, count(*) from flush_new
group by 1, 2, 3, 4 order by 1, 2, 3, 4
on conflict (message_id, kind, hour, verdict) do update set total = h.total + excluded.total;
"""

DWELL = """
insert into message_read_dwell as d (message_id, seconds, total)
select message_id, least(floor((data->>'dwell_s')::float8), 3600)::int, count(*) from flush_new
where kind = 'read' and jsonb_typeof(data->'dwell_s') = 'number' and (data->>'dwell_s')::float8 >= 0
group by 1, 2 order by 1, 2
on conflict (message_id, seconds) do update set total = d.total + excluded.total;
"""

LINK_CLICKS = f"""
with clicks as (
    select message_id, link_version, link_index, profile_id, verdict from flush_new
    where kind = any({_CLICKED}) and link_index >= 0
), firsts as (
    insert into message_link_profiles (message_id, version, idx, profile_id)
    select distinct c.message_id, c.link_version, c.link_index, c.profile_id from clicks c
    where c.profile_id <> 0 and exists (select from profiles p where p.id = c.profile_id)
    order by 1, 2, 3, 4
    on conflict do nothing
    returning message_id, version, idx
), uniques as (
    select message_id, version, idx, count(*) as n from firsts group by 1, 2, 3
), totals as (
    select message_id, link_version as version, link_index as idx, count(*) as total,
           count(*) filter (where verdict = 'human') as human
    from clicks group by 1, 2, 3
)
insert into message_link_clicks as l (message_id, version, idx, total, uniques, human)
select t.message_id, t.version, t.idx, t.total, coalesce(u.n, 0), t.human
from totals t left join uniques u using (message_id, version, idx)
order by 1, 2, 3
on conflict (message_id, version, idx) do update set
    total = l.total + excluded.total, uniques = l.uniques + excluded.uniques, human = l.human + excluded.human;
"""

PROFILE_ACTIVITY = f"""
with mine as (
    select n.profile_id, n.message_id, n.kind, n.ts from flush_new n
    -- No check that the profile exists (a lookup per event): a deleted profile's row is never read.
    where n.profile_id <> 0 and (n.kind = any({_ACTIVE}) or n.kind = any({_RECEIVED}))
), pairs as (
    select distinct profile_id, message_id,
           case when kind = any({_RECEIVED}) then {_RECEIVED}
                when kind = any({_OPENED}) then {_OPENED}
                when kind = any({_CLICKED}) then {_CLICKED} end as kinds
    from mine where kind = any({_RECEIVED}) or kind = any({_OPENED}) or kind = any({_CLICKED})
), firsts as (
    -- A message counts for a profile the first time it receives, opens or clicks it.
    select p.profile_id,
           count(*) filter (where p.kinds = {_RECEIVED}) as received,
           count(*) filter (where p.kinds = {_OPENED}) as opened,
           count(*) filter (where p.kinds = {_CLICKED}) as clicked
    from pairs p
    where not exists (select from message_profile_stats s
                      where s.message_id = p.message_id and s.profile_id = p.profile_id and s.kind = any(p.kinds))
    group by 1
), times as (
    select profile_id, min(ts) filter (where kind = any({_ACTIVE})) as first_at,
           max(ts) filter (where kind = any({_ACTIVE})) as last_at
    from mine group by 1
), days as (
    insert into profile_active_days (profile_id, day)
    select distinct profile_id, (ts at time zone 'UTC')::date from mine where kind = any({_ACTIVE})
    order by 1, 2
    on conflict do nothing
)
insert into profile_activity as a (profile_id, first_at, last_at, received, opened, clicked)
select t.profile_id, t.first_at, t.last_at,
       coalesce(f.received, 0), coalesce(f.opened, 0), coalesce(f.clicked, 0)
from times t left join firsts f using (profile_id)
order by t.profile_id
on conflict (profile_id) do update set
    first_at = least(a.first_at, excluded.first_at),
    last_at = greatest(a.last_at, excluded.last_at),
    received = a.received + excluded.received,
    opened = a.opened + excluded.opened,
    clicked = a.clicked + excluded.clicked;
"""

# After the counters: these rows are per message, shared by every batch of a campaign.
AFTER_COUNTERS = "\n".join([HOURLY, DWELL, LINK_CLICKS])

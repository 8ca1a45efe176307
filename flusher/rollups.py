"""The analytics rollups of one batch, from `flush_new` (the batch's new events) only.

They run in the batch's transaction with the counters (flusher.effects), so an event is in the
rollups exactly when it is in `events`. Rows are written in key order, like the counters, so two
flushers lock shared rows in the same order; and last in the transaction, since every batch of a
campaign updates the same per-message rows. What each table holds: migrations 0008 and 0009.
The per-profile side (which days a profile was active) is tracker.domain.analytics.active_days.
"""

from __future__ import annotations

_CLICKED = "array['clicked', 'push_clicked']"

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
    where c.profile_id in (select id from profiles where id = any(array(select profile_id from clicks)))
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

# After the counters: these rows are per message, shared by every batch of a campaign.
AFTER_COUNTERS = "\n".join([HOURLY, DWELL, LINK_CLICKS])

"""The rollups' share of a verdict change: to run after `tracker.domain.verdict_store`'s `_APPLY`.

`_APPLY` fills `verdict_changes` (old and new verdict per event) and updates `events` first; the
hourly rollup keeps a split by verdict and the link rollup a human count, so both move by the
same deltas. Appended to `_APPLY` as it stands, this keeps them exact through `tracker reclassify`.
"""

from __future__ import annotations

APPLY_ROLLUPS = """
insert into message_hourly as h (message_id, kind, hour, verdict, total)
select message_id, kind, date_trunc('hour', ts, 'UTC'), verdict, sum(delta) from (
    select message_id, kind, ts, new_verdict as verdict, 1 as delta from verdict_changes
    where new_verdict <> old_verdict
    union all
    select message_id, kind, ts, old_verdict, -1 from verdict_changes where new_verdict <> old_verdict
) x
group by 1, 2, 3, 4 order by 1, 2, 3, 4
on conflict (message_id, kind, hour, verdict) do update set total = h.total + excluded.total;

update message_link_clicks l set human = l.human + d.dh
from (
    select e.message_id, e.link_version, e.link_index,
           sum((c.new_verdict = 'human')::int - (c.old_verdict = 'human')::int) as dh
    from verdict_changes c join events e on e.id = c.id and e.ts = c.ts
    where c.kind in ('clicked', 'push_clicked') and e.link_index >= 0
    group by 1, 2, 3 order by 1, 2, 3
) d
where l.message_id = d.message_id and l.version = d.link_version and l.idx = d.link_index and d.dh <> 0;
"""

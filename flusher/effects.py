"""The SQL of one batch: insert with dedupe, then counters and profile effects, set-based.

Everything reads two session temp tables: `flush_staging` (the batch, filled by
binary COPY) and `flush_new` (the events that were not in Postgres yet, filled
by the insert). Effects are computed from `flush_new` only, so an event applies
once whatever is retried. Rows are visited in key order so that two flushers
lock shared rows (counters, profiles) in the same order.

Time rules, so that late or reclaimed events never undo newer facts:
- a profile field set by a click changes only if the click is newer than the
  click that set it last (`profile_field_times`);
- a subscription changes only if the event is not older than its last change;
- email status only escalates (active < hard_bounced < complained);
- phone status takes the newest SMS outcome; complained is final.

Profiles that do not exist (and the anonymous profile 0) get no effects and
count in totals, not in uniques; their events are stored all the same.
"""

from __future__ import annotations

from flusher import rollups
from tracker.config import Settings

SETUP = """
create temp table if not exists flush_staging (
    id uuid, ts_us bigint, kind text, channel text, message_id bigint, profile_id bigint,
    link_version integer, link_index integer, ua_class text, ip_prefix text, data jsonb,
    -- reasons comma-joined: COPY encodes a text[] per row at four times the cost of the rest of the row
    signals integer, ua_family text, verdict text, reasons text, payload bytea
) on commit delete rows;
create temp table if not exists flush_new (
    id uuid, ts timestamptz, kind text, channel text, message_id bigint, profile_id bigint,
    link_version integer, link_index integer, data jsonb, ip_prefix text, verdict text, reasons text[]
) on commit delete rows;
create temp table if not exists flush_attrs (
    profile_id bigint, ts timestamptz, name text, value text
) on commit delete rows;
create temp table if not exists flush_uniques (
    message_id bigint, kind text, uniques bigint, human_uniques bigint, machine_uniques bigint
) on commit delete rows;
create temp table if not exists flush_settled (
    event_id uuid, ts timestamptz, message_id bigint, profile_id bigint, link_version integer, link_index integer,
    verdict text, event bytea
) on commit delete rows;
"""

STAGING_COLUMNS = (
    "id", "ts_us", "kind", "channel", "message_id", "profile_id",
    "link_version", "link_index", "ua_class", "ip_prefix", "data",
    "signals", "ua_family", "verdict", "reasons", "payload",
)  # fmt: skip

_EVENT_COLUMNS = """id, ts, kind, channel, message_id, profile_id, link_version, link_index,
                    ua_class, ip_prefix, data, signals, ua_family, verdict, reasons"""
_FROM_STAGING = """id, timestamptz '1970-01-01 00:00:00+00' + ts_us * interval '1 microsecond', kind, channel,
       message_id, profile_id, link_version, link_index, ua_class, ip_prefix, data,
       signals, ua_family, verdict, string_to_array(reasons, ',')"""
_NEW_COLUMNS = """id, ts, kind, channel, message_id, profile_id, link_version, link_index, data, ip_prefix,
                  verdict, reasons"""

# Most batches hold no event stored already: they go in with a plain insert, which costs about a
# seventh less than the insert with dedupe (no speculative insertion, no RETURNING; measured in
# docs/flusher-projections.md). Inside a savepoint: a duplicate (a retry, a replay, another flusher
# holding a copy) fails it on the unique index, and the caller rolls back to FAST_FAILED and takes
# the insert with dedupe. In id order, as every write here, so two flushers holding copies of the
# same events wait on each other in one direction only, never in a deadlock.
_INSERT_ALL = f"""
savepoint flush_fast;
insert into {{table}} ({_EVENT_COLUMNS})
select {_FROM_STAGING}
from flush_staging order by id;
insert into flush_new ({_NEW_COLUMNS})
select id, timestamptz '1970-01-01 00:00:00+00' + ts_us * interval '1 microsecond', kind, channel,
       message_id, profile_id, link_version, link_index, data, ip_prefix, verdict, string_to_array(reasons, ',')
from flush_staging;
release savepoint flush_fast;
"""
FAST_FAILED = "rollback to savepoint flush_fast"

_INSERT_NEW = f"""
with inserted as (
    insert into {{table}} ({_EVENT_COLUMNS})
    select {_FROM_STAGING}
    from flush_staging
    order by id
    on conflict (id, ts) do nothing
    returning {_NEW_COLUMNS}
)
insert into flush_new select * from inserted
"""


def insert_all(partition: str | None) -> str:
    """The batch's insert when none of it is stored yet (a unique violation says otherwise)."""
    return _INSERT_ALL.format(table=partition or "events")


def insert_new(partition: str | None) -> str:
    """The insert of the batch; straight into the day's partition when it all falls on one day.

    An (id, ts) pair always lands in the same partition, so that partition's unique
    index dedupes exactly as the parent's does, without routing every row.
    """
    return _INSERT_NEW.format(table=partition or "events")


# Per (message, profile, kind): the batch's counts, and which profiles this batch took from zero
# (per verdict), summed per message and kind into `flush_uniques` for the shared counters below.
# Its own statement, before the profile lock: it writes only rows of the batch's own profiles.
_PER_PROFILE = """
with batch as (
    select n.message_id, n.profile_id, n.kind, min(n.ts) as first_at, max(n.ts) as last_at, count(*) as total,
           count(*) filter (where n.verdict = 'human') as human,
           count(*) filter (where n.verdict = 'machine') as machine
    from flush_new n
    -- The batch's profiles that exist, one index probe each (as a semi-join the planner would read
    -- every profile into a hash for each batch, whatever the batch's size).
    join (select id from profiles where id = any(array(select distinct profile_id from flush_new where profile_id <> 0))
    ) known on known.id = n.profile_id
    group by n.message_id, n.profile_id, n.kind
), per_profile as (
    insert into message_profile_stats as s (message_id, profile_id, kind, first_at, last_at, total, human, machine)
    select message_id, profile_id, kind, first_at, last_at, total, human, machine from batch
    order by message_id, profile_id, kind
    on conflict (message_id, profile_id, kind) do update set
        first_at = least(s.first_at, excluded.first_at),
        last_at = greatest(s.last_at, excluded.last_at),
        total = s.total + excluded.total,
        human = s.human + excluded.human,
        machine = s.machine + excluded.machine
    returning message_id, profile_id, kind, (xmax = 0) as first_time, human, machine
)
-- A profile counts once per verdict: when this batch took its count from zero.
insert into flush_uniques (message_id, kind, uniques, human_uniques, machine_uniques)
select p.message_id, p.kind, count(*) filter (where p.first_time),
       count(*) filter (where p.human > 0 and p.human = b.human),
       count(*) filter (where p.machine > 0 and p.machine = b.machine)
from per_profile p join batch b using (message_id, profile_id, kind)
group by 1, 2;
"""

# Per message and kind: rows every batch of a campaign shares, so among the transaction's last.
_COUNTERS = """
with totals as (
    select message_id, kind, count(*) as total, min(ts) as first_at, max(ts) as last_at,
           count(*) filter (where verdict = 'human') as human,
           count(*) filter (where verdict = 'machine') as machine
    from flush_new group by 1, 2
)
insert into message_counters as c (message_id, kind, total, uniques, first_at, last_at,
                                   human, human_uniques, machine, machine_uniques)
select t.message_id, t.kind, t.total, coalesce(u.uniques, 0), t.first_at, t.last_at,
       t.human, coalesce(u.human_uniques, 0), t.machine, coalesce(u.machine_uniques, 0)
from totals t left join flush_uniques u using (message_id, kind)
order by t.message_id, t.kind
on conflict (message_id, kind) do update set
    total = c.total + excluded.total,
    uniques = c.uniques + excluded.uniques,
    first_at = least(c.first_at, excluded.first_at),
    last_at = greatest(c.last_at, excluded.last_at),
    human = c.human + excluded.human,
    human_uniques = c.human_uniques + excluded.human_uniques,
    machine = c.machine + excluded.machine,
    machine_uniques = c.machine_uniques + excluded.machine_uniques;
"""

# The per-profile statement joins the upsert's RETURNING rows back to the batch (which profile went from zero).
# The planner cannot tell how many rows a CTE over the batch holds and has guessed two, then run that
# join as a nested loop: 6,461 x 6,461 comparisons, four seconds for one batch. Hash and merge joins
# are right for it at every size; the setting holds for that one statement only.
_NO_NESTED_LOOPS = "set local enable_nestloop = off;"
_NESTED_LOOPS = "set local enable_nestloop = on;"

_REASONS = """
insert into message_verdict_reasons as r (message_id, kind, verdict, reason, total)
select n.message_id, n.kind, n.verdict, reason, count(*)
from flush_new n cross join lateral unnest(n.reasons) as reason
where cardinality(n.reasons) > 0
group by 1, 2, 3, 4 order by 1, 2, 3, 4
on conflict (message_id, kind, verdict, reason) do update set total = r.total + excluded.total;
"""

# Clicks do not act at once: they wait out the settle window (flusher.settling), where a burst or a
# honeypot fetch can still show them to be a machine's. Due from when the flusher sees them, so a
# flusher catching up on a backlog still leaves the rules the whole window.
_SETTLE = """
insert into settling_clicks (event_id, ts, message_id, profile_id, kind, link_version, link_index, ip_prefix,
                             verdict, reasons, event, due_at)
select n.id, n.ts, n.message_id, n.profile_id, n.kind, n.link_version, n.link_index, n.ip_prefix,
       n.verdict, n.reasons, s.payload, greatest(now(), n.ts) + interval '{settle} seconds'
from flush_new n join flush_staging s on s.id = n.id
where n.kind in ('clicked', 'push_clicked')
order by n.id
on conflict do nothing;
"""

# Attributes of settled clicks that act on the profile, with the click's profile and time
# (flusher.settling fills flush_settled with the clicks whose verdict allows effects).
LINK_ATTRIBUTES = """
insert into flush_attrs (profile_id, ts, name, value)
select f.profile_id, f.ts, a.key, a.value
from flush_settled f
join links l on l.message_id = f.message_id and l.version = f.link_version and l.idx = f.link_index
cross join lateral jsonb_each_text(l.attributes) a
where f.verdict = any($1::text[]) and f.profile_id <> 0 and f.link_index >= 0
  and l.attributes <> '{}'::jsonb
  and (a.key like 'update-%' or a.key = 'subscribe-to');
"""

# Profiles this batch changes, locked in id order before any of them is written.
_LOCK_PROFILES = """
select from profiles where id = any(array(
    select profile_id from flush_attrs
    union
    select profile_id from flush_new
    where profile_id <> 0
      and (kind in ('unsubscribed', 'confirmed', 'subscribed', 'hard_bounce', 'soft_bounce', 'complained')
           -- only SMS outcomes change the profile (its phone); an email delivered changes nothing
           or (channel = 'sms' and kind in ('undelivered', 'delivered')))
-- As an array: one index probe per profile, where `in (...)` had every profile read for each batch.
)) order by id for update;
"""

_PROFILE_FIELDS = """
with latest as (
    select distinct on (a.profile_id, f.name) a.profile_id, f.name, a.ts,
           flusher_field_value(f.type, f.enum_values, a.value) as value
    from flush_attrs a
    join profile_fields f on f.name = substr(a.name, 8)
    join profiles p on p.id = a.profile_id
    where a.name like 'update-%'
    order by a.profile_id, f.name, a.ts desc, a.value
), fresh as (
    insert into profile_field_times as t (profile_id, field, set_at)
    select profile_id, name, ts from latest where value is not null
    order by profile_id, name
    on conflict (profile_id, field) do update set set_at = excluded.set_at where t.set_at < excluded.set_at
    returning profile_id, field
)
update profiles p set fields = p.fields || v.fields, updated_at = now()
from (
    select l.profile_id, jsonb_object_agg(l.name, l.value) as fields
    from latest l join fresh f on f.profile_id = l.profile_id and f.field = l.name
    group by l.profile_id
) v
where p.id = v.profile_id;
"""

_SUBSCRIPTIONS = """
with changes as (
    select a.profile_id, trim(a.value)::bigint as resource_id, a.ts, 'subscribe' as action
    from flush_attrs a where a.name = 'subscribe-to' and a.value ~ '^\\s*\\d{1,18}\\s*$'
    union all
    select n.profile_id, m.resource_id, n.ts, n.kind
    from flush_new n join messages m on m.id = n.message_id
    -- `subscribed`: a recipient's resubscribe from the unsubscribe page (edge.unsubscribe)
    where n.kind in ('unsubscribed', 'confirmed', 'subscribed') and n.profile_id <> 0 and m.resource_id is not null
), latest as (
    select distinct on (c.profile_id, c.resource_id) c.profile_id, c.resource_id, c.ts, c.action
    from changes c
    join profiles p on p.id = c.profile_id
    join resources r on r.id = c.resource_id
    order by c.profile_id, c.resource_id, c.ts desc, (c.action = 'unsubscribed') desc, c.action
)
insert into subscriptions as s (profile_id, resource_id, status, subscribed_at, confirmed_at, unsubscribed_at)
select profile_id, resource_id,
       case when action = 'unsubscribed' then 'unsubscribed' else 'subscribed' end,
       case when action <> 'unsubscribed' then ts end,
       case when action = 'confirmed' then ts end,
       case when action = 'unsubscribed' then ts end
from latest
order by profile_id, resource_id
on conflict (profile_id, resource_id) do update set
    status = excluded.status,
    subscribed_at = case when excluded.status = 'subscribed' and s.status <> 'subscribed'
                         then excluded.subscribed_at else coalesce(s.subscribed_at, excluded.subscribed_at) end,
    confirmed_at = coalesce(excluded.confirmed_at, s.confirmed_at),
    unsubscribed_at = coalesce(excluded.unsubscribed_at, s.unsubscribed_at),
    updated_at = now()
where coalesce(greatest(s.subscribed_at, s.confirmed_at, s.unsubscribed_at), '-infinity')
      <= coalesce(excluded.unsubscribed_at, excluded.confirmed_at, excluded.subscribed_at);
"""

_SOFT_BOUNCES = """
insert into email_soft_bounces (profile_id, ts, event_id)
select n.profile_id, n.ts, n.id from flush_new n
where n.kind = 'soft_bounce' and n.channel = 'email' and n.profile_id <> 0
  and n.profile_id in (select id from profiles where id = any(array(
      select profile_id from flush_new where kind = 'soft_bounce' and channel = 'email')))
order by 1, 2, 3
on conflict do nothing;
"""

# Email status only escalates: active < hard_bounced < complained. The time kept is
# the earliest event that justifies the status, so the order of arrival does not matter.
_EMAIL_STATUS = """
with escalated as (
    select profile_id, min(ts) as at from (
        select b.profile_id, b.ts, count(*) over (
            partition by b.profile_id order by b.ts
            range between interval '{window} seconds' preceding and current row) as bounces
        from email_soft_bounces b
        where b.profile_id in (select profile_id from flush_new where kind = 'soft_bounce' and channel = 'email')
    ) w
    where bounces >= {limit}
    group by profile_id
), outcome as (
    select profile_id, 'complained' as status, min(ts) as at from flush_new
    where kind = 'complained' and channel = 'email' and profile_id <> 0 group by 1
    union all
    select profile_id, 'hard_bounced', min(ts) from flush_new
    where kind = 'hard_bounce' and channel = 'email' and profile_id <> 0 group by 1
    union all
    select profile_id, 'hard_bounced', at from escalated
), best as (
    select distinct on (profile_id) profile_id, status, at from outcome
    order by profile_id, (status = 'complained') desc, at
)
update profiles p set
    email_status = b.status,
    email_status_at = case when p.email_status = b.status then least(p.email_status_at, b.at) else b.at end,
    updated_at = now()
from best b
where p.id = b.profile_id
  and (p.email_status = 'active'
       or (p.email_status = 'hard_bounced' and b.status = 'complained')
       or (p.email_status = b.status and b.at < p.email_status_at));
"""

# `delivered` only writes when it clears an older undelivered: most SMS are delivered,
# and rewriting the profile for each would cost more than everything else here.
_PHONE_STATUS = """
with outcome as (
    select distinct on (profile_id) profile_id, kind, ts, data->>'code' as code from flush_new
    where channel = 'sms' and kind in ('undelivered', 'delivered', 'complained') and profile_id <> 0
    order by profile_id, (kind = 'complained') desc, ts desc, kind desc
)
update profiles p set
    phone_status = case o.kind when 'complained' then 'complained'
                               when 'undelivered' then 'undelivered' else 'active' end,
    phone_status_code = case o.kind when 'undelivered' then o.code
                                    when 'delivered' then null else p.phone_status_code end,
    phone_status_at = o.ts,
    updated_at = now()
from outcome o
where p.id = o.profile_id and p.phone_status <> 'complained'
  and (o.kind = 'complained' or p.phone_status_at is null or o.ts > p.phone_status_at)
  and (o.kind <> 'delivered' or p.phone_status = 'undelivered');
"""


def effects_steps(settings: Settings, *, with_rollups: bool = True) -> list[tuple[str, str]]:
    """Every statement after the insert, as named steps, each one round trip and timed on its own.

    Rows no other batch of this flusher writes come first (the batch's clicks, its per-profile
    counts). Then what another batch may hold until its commit: the profiles this batch changes
    (locked, then written), and last the rows every batch of a campaign shares (counters, reasons,
    the per-message rollups). An insert or lock that meets another open transaction's row waits for
    its commit: the later such a statement runs, the less of the other batch's work it waits out.
    `with_rollups=False` leaves the analytics rollups out (the benchmark's "without" figure).
    """
    email = _EMAIL_STATUS.format(
        window=int(settings.flusher.soft_bounce_window_s), limit=int(settings.flusher.soft_bounce_limit)
    )
    profile_effects = [_LOCK_PROFILES, _PROFILE_FIELDS, _SUBSCRIPTIONS, _SOFT_BOUNCES, email, _PHONE_STATUS]
    steps = [
        ("settle_queue", _SETTLE.format(settle=float(settings.flusher.settle_s))),  # rows only this batch writes
        ("recipient_firsts", "\n".join([_NO_NESTED_LOOPS, _PER_PROFILE, _NESTED_LOOPS])),  # the batch's profiles
        ("profile_effects", "\n".join(profile_effects)),
        ("message_counters", "\n".join([_COUNTERS, _REASONS])),  # rows every batch shares, from here on
    ]
    if with_rollups:
        steps.append(("rollups", rollups.AFTER_COUNTERS))
    return steps


# The settle pass's profile effects: the same statements, fed by flush_attrs alone (flush_new is empty).
ATTRIBUTE_EFFECTS = "\n".join([_LOCK_PROFILES, _PROFILE_FIELDS, _SUBSCRIPTIONS])

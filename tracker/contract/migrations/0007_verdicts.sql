-- Human or machine: the signals each event keeps, its verdict and reasons, counters split by verdict,
-- clicks waiting out the settle window, and the honeypot option of a message.

-- Events written before this migration were not judged: their verdict is `unknown` until
-- `tracker reclassify` judges them from what they kept (user-agent class and IP prefix).
alter table events
    add column signals   integer not null default 0,
    add column ua_family text not null default '',
    add column verdict   text not null default 'unknown' check (verdict in ('human', 'machine', 'unknown')),
    add column reasons   text[] not null default '{}';

-- Per message, kind and profile: how many of the events were judged human or machine.
alter table message_profile_stats
    add column human   bigint not null default 0,
    add column machine bigint not null default 0;

-- Per message and kind: totals by verdict, and uniques (profiles with at least one such event).
alter table message_counters
    add column human           bigint not null default 0,
    add column human_uniques   bigint not null default 0,
    add column machine         bigint not null default 0,
    add column machine_uniques bigint not null default 0;

-- How many events of a message and kind each reason helped decide.
create table message_verdict_reasons (
    message_id  bigint not null,
    kind        text not null,
    verdict     text not null,
    reason      text not null,
    total       bigint not null,
    primary key (message_id, kind, verdict, reason)
);

-- Clicks wait here for the settle window before their profile effects and their action-hook
-- delivery: the burst and honeypot rules may still turn them into a machine's. Kept a while
-- after (state `forwarded`) as the recent history those rules look at.
--   waiting:   stored, effects not applied yet
--   applied:   effects applied (or skipped: a machine's) in the same transaction; not yet on the
--              committed streams (a flusher that dies here forwards them again: at least once)
--   forwarded: on the committed streams
create table settling_clicks (
    event_id    uuid not null,
    ts          timestamptz not null,
    message_id  bigint not null,
    profile_id  bigint not null,
    kind        text not null,
    link_version integer not null,
    link_index  integer not null,
    ip_prefix   text not null,
    verdict     text not null,
    reasons     text[] not null,
    event       bytea not null,  -- the Event as msgpack, for the committed streams
    due_at      timestamptz not null,
    state       text not null default 'waiting' check (state in ('waiting', 'applied', 'forwarded')),
    primary key (event_id, ts)
);
create index settling_clicks_due on settling_clicks (due_at) where state <> 'forwarded';
create index settling_clicks_neighbours on settling_clicks (message_id, ip_prefix, ts);

-- A message may carry one invisible link (the renderer adds it): only machines follow it.
alter table messages add column honeypot boolean not null default false;

-- When the API last rendered a message for a profile: the `too fast` rule's first reference
-- (provider `sent` and `delivered` reports give the others).
create table message_renders (
    message_id  bigint not null,
    profile_id  bigint not null,
    rendered_at timestamptz not null,
    primary key (message_id, profile_id)
);

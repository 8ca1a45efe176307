-- Analytics rollups: kept by the flusher in the batch's transaction (flusher/rollups.py), from the
-- batch's new events only, so each event counts once. Reports read these, never `events`, and a
-- report's cost follows the size of its answer, not the number of events behind it.
-- Events stored before this migration are not in the rollups.

-- Per message, kind, UTC hour and verdict: the funnel's time series (days are sums of hours).
create table message_hourly (
    message_id  bigint not null,
    kind        text not null,
    hour        timestamptz not null,
    verdict     text not null,
    total       bigint not null,
    primary key (message_id, kind, hour, verdict)
);

-- Per message, link-table version and link: clicks, distinct profiles, clicks judged human.
create table message_link_clicks (
    message_id  bigint not null,
    version     integer not null,
    idx         integer not null,
    total       bigint not null,
    uniques     bigint not null,
    human       bigint not null,
    primary key (message_id, version, idx)
);

-- Which profiles clicked which link: what makes a link's `uniques` exact (the row's first insert).
create table message_link_profiles (
    message_id  bigint not null,
    version     integer not null,
    idx         integer not null,
    profile_id  bigint not null,
    primary key (message_id, version, idx, profile_id)
);

-- Reads per message and whole second of dwell (capped at 3600): the funnel's dwell quantiles.
create table message_read_dwell (
    message_id  bigint not null,
    seconds     integer not null,
    total       bigint not null,
    primary key (message_id, seconds)
);

-- Per profile: its lifetime. Activity is what the person did (opened, read, clicked, push opened
-- or clicked, site actions); received, opened and clicked count distinct messages.
create table profile_activity (
    profile_id  bigint primary key,
    first_at    timestamptz,
    last_at     timestamptz,
    received    bigint not null default 0,
    opened      bigint not null default 0,
    clicked     bigint not null default 0
);
-- "Any activity since T" walks this.
create index profile_activity_last on profile_activity (last_at, profile_id);

-- The UTC days on which a profile was active: cohorts count active profiles per period from it.
create table profile_active_days (
    profile_id  bigint not null,
    day         date not null,
    primary key (profile_id, day)
);

-- A profile's timeline, newest first, a page at a time.
create index events_profile_ts on events (profile_id, ts desc, id desc);

-- The message list, filtered by creation time and channel, a page at a time in id order.
create index messages_created on messages (created_at, id);
create index messages_channel on messages (channel, id);

-- Profiles filtered by field values (`fields @> {...}`).
create index profiles_fields on profiles using gin (fields jsonb_path_ops);

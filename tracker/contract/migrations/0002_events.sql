-- Events, their per-message counters and per-profile facts, written by the flusher.

-- One row per event id. Partitioned by day on `ts` (UTC days); the flusher
-- creates partitions ahead and drops them past the retention setting. A unique
-- key on a partitioned table must include the partition column: an event id
-- always travels with the same ts, so (id, ts) dedupes retried writes.
create table events (
    id            uuid not null,
    ts            timestamptz not null,
    kind          text not null,
    channel       text not null,
    message_id    bigint not null,
    profile_id    bigint not null,   -- 0: anonymous
    link_version  integer not null,
    link_index    integer not null,  -- -1: no link
    ua_class      text not null,
    ip_prefix     text not null,
    data          jsonb,
    stored_at     timestamptz not null default now()
) partition by range (ts);
create unique index events_id_ts on events (id, ts);

-- Totals and uniques per message and kind. Uniques count profiles (not anonymous
-- ones, and only profiles that exist) the first time they do that kind.
create table message_counters (
    message_id  bigint not null,
    kind        text not null,
    total       bigint not null,
    uniques     bigint not null,
    first_at    timestamptz not null,
    last_at     timestamptz not null,
    primary key (message_id, kind)
);

-- What each profile did with each message: first and last time and how often,
-- per kind. Segmentation ("opened X but did not click") reads this.
-- No foreign keys: this is written for nearly every event, and FK triggers
-- would cost more than the insert itself.
create table message_profile_stats (
    message_id  bigint not null,
    profile_id  bigint not null,
    kind        text not null,
    first_at    timestamptz not null,
    last_at     timestamptz not null,
    total       bigint not null,
    primary key (message_id, profile_id, kind)
);

-- Recent soft bounces per profile, to escalate N within a window to a hard bounce.
create table email_soft_bounces (
    profile_id  bigint not null references profiles (id) on delete cascade,
    ts          timestamptz not null,
    event_id    uuid not null,
    primary key (profile_id, ts, event_id)
);

-- When a profile field was last set from a click: a click older than the value
-- in place (a late or reclaimed event) does not overwrite it.
create table profile_field_times (
    profile_id  bigint not null references profiles (id) on delete cascade,
    field       text not null,
    set_at      timestamptz not null,
    primary key (profile_id, field)
);

-- A link attribute value typed by the field's declared type; null when the value
-- does not fit (so one bad template value never fails a whole batch).
create function flusher_field_value(field_type text, enum_values text[], raw text) returns jsonb
language plpgsql immutable as $$
begin
    case field_type
    when 'string' then
        return to_jsonb(raw);
    when 'number' then
        if raw ~ '^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$' then
            return to_jsonb(raw::numeric);
        end if;
    when 'boolean' then
        case lower(trim(raw))
        when 'true', 't', 'yes', 'y', 'on', '1' then return 'true'::jsonb;
        when 'false', 'f', 'no', 'n', 'off', '0' then return 'false'::jsonb;
        else return null;
        end case;
    when 'date' then
        if raw ~ '^\s*\d{4}-\d{2}-\d{2}\s*$' then
            begin
                return to_jsonb(to_char(trim(raw)::date, 'YYYY-MM-DD'));
            exception when others then
                return null;
            end;
        end if;
    when 'enum' then
        if raw = any(enum_values) then
            return to_jsonb(raw);
        end if;
    else
        return null;
    end case;
    return null;
end $$;

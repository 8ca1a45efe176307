-- API keys and SMS short links, written by the API (issue 5).

-- A key is shown once when created; only the SHA-256 of its secret part is kept.
-- The public id (the part after `trk_`) finds the row without scanning.
create table api_keys (
    id             text primary key check (id ~ '^[0-9a-f]{12}$'),
    name           text not null,
    scopes         text[] not null check (scopes <@ array['read', 'write']::text[] and cardinality(scopes) > 0),
    secret_sha256  bytea not null check (length(secret_sha256) = 32),
    created_at     timestamptz not null default now(),
    revoked_at     timestamptz
);

-- One short code per recipient and link of an SMS, so the whole text stays short.
-- Codes are random: the unique key catches the rare collision and the writer retries.
-- A second render of the same message for the same recipient reuses the codes.
create table short_links (
    code        text primary key check (code ~ '^[0-9A-Za-z]{6,8}$'),
    message_id  bigint not null,
    version     integer not null,
    idx         integer not null check (idx >= 0),
    profile_id  bigint not null,
    created_at  timestamptz not null default now(),
    unique (message_id, version, idx, profile_id),
    foreign key (message_id, version, idx) references links (message_id, version, idx) on delete cascade
);

-- Snapshots of the list reports (cohorts over their default range, lifetimes), written by the edge
-- (tracker/domain/analytics/report_snapshots.py), never by the flusher: a warm report reads one row
-- instead of every member's rollups. `computed_at` is the report's "as of": everything committed
-- before it is in `body`. One row per report, list and variant; a refresher holds a transaction
-- advisory lock on the key, so one runs at a time per key across every edge.
create table report_snapshots (
    report       text not null,
    resource_id  bigint not null references resources (id) on delete cascade,
    variant      text not null,
    computed_at  timestamptz not null,
    body         jsonb not null,
    primary key (report, resource_id, variant)
);

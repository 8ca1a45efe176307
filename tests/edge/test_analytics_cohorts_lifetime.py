"""A list's cohorts and lifetimes: the one-pass lifetime query against the first (reference) one, and the
snapshots they are served from (as of, staleness, background refresh, one refresher per key)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import random

import asyncpg

from tests.rigs.api_helpers import running_api
from tests.rigs.flusher_helpers import make_profiles, make_resource
from tracker.domain.analytics import cohorts, report_snapshots
from tracker.domain.analytics.report_snapshots import Key, ReportSnapshots

# The lifetime query as first written (one row per profile and measure, numeric log buckets): the
# reference the faster one must match exactly (both read the members' activity the same way).
REFERENCE = f"""
with members as (
    select coalesce(extract(epoch from a.last_at - a.first_at) / 86400, 0)::float8 as lifetime_days,
           coalesce(a.received, 0)::float8 as received, coalesce(a.opened, 0)::float8 as opened,
           coalesce(a.clicked, 0)::float8 as clicked
    from ({cohorts.MEMBER_ACTIVITY}) a
), measures as (
    select v.name, v.value from members m cross join lateral (values ('lifetime_days', m.lifetime_days),
        ('received', m.received), ('opened', m.opened), ('clicked', m.clicked)) v(name, value)
), buckets as (
    select name, case when value < 1 then 0 else floor(log(2, value::numeric))::int + 1 end as bucket, count(*) as n
    from measures group by 1, 2
)
select m.name, m.q, b.buckets, b.counts
from (select name, percentile_cont(array[0.5, 0.9, 0.99]) within group (order by value) as q
      from measures group by 1) m
join (select name, array_agg(bucket order by bucket) as buckets, array_agg(n order by bucket) as counts
      from buckets group by 1) b using (name)
"""


_COUNTS_MAX = 33


async def _list_with_activity(pg: asyncpg.Connection, rng: random.Random, size: int) -> int:
    """A list of `size` profiles with varied activity with the list's messages: none, powers of two
    (bucket edges), ties, fractions of a day."""
    resource = await make_resource(pg)
    messages = await _messages(pg, resource, _COUNTS_MAX)
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    rows = []
    for profile in await make_profiles(pg, size):
        status = rng.choice(["pending", "subscribed", "subscribed", "unsubscribed"])
        await pg.execute("insert into subscriptions (profile_id, resource_id, status, subscribed_at)"
                         " values ($1, $2, $3, $4)", profile, resource, status, base)  # fmt: skip
        if rng.random() < 0.2:
            continue  # never active, nothing received
        days = rng.choice([0, 0.5, 1, 2, 4, 8, 3.25, 100 * rng.random()])
        # A read of the first message spans the lifetime; sends, deliveries, opens and clicks fall inside it.
        rows.append((messages[0], profile, "read", base, base + dt.timedelta(days=days)))
        counts = [rng.choice([0, 1, 2, 3, 4, 7, 8, 16, 33]) for _ in range(3)]
        for kinds, count in zip((("sent", "delivered"), ("opened",), ("clicked",)), counts, strict=True):
            rows += [(message, profile, kind, base, base) for message in messages[:count] for kind in kinds]
    await _stats(pg, rows)
    return resource


async def _messages(pg: asyncpg.Connection, resource: int, count: int) -> list[int]:
    rows = await pg.fetch("insert into messages (channel, resource_id) select 'email', $1 from generate_series(1, $2)"
                          " returning id", resource, count)  # fmt: skip
    return sorted(row["id"] for row in rows)


async def _stats(pg: asyncpg.Connection, rows: list[tuple]) -> None:
    await pg.executemany("insert into message_profile_stats (message_id, profile_id, kind, first_at, last_at, total)"
                         " values ($1, $2, $3, $4, $5, 1)", rows)  # fmt: skip


async def test_the_one_pass_lifetime_matches_the_reference_query(pg) -> None:
    rng = random.Random(12)
    resource = await _list_with_activity(pg, rng, 150)
    for statuses in (["pending", "subscribed", "unsubscribed"], ["subscribed"], ["pending"]):
        fast = await cohorts.lifetime(pg, resource, statuses)
        reference = {r["name"]: r for r in await pg.fetch(REFERENCE, resource, statuses)}
        assert set(fast["measures"]) == set(reference)
        for name, row in reference.items():
            measure = fast["measures"][name]
            assert [measure["p50"], measure["p90"], measure["p99"]] == list(row["q"]), (name, statuses)
            assert [(b["low"], b["high"], b["profiles"]) for b in measure["histogram"]] == [
                (0 if b == 0 else 2 ** (b - 1), 1 if b == 0 else 2**b, n)
                for b, n in zip(row["buckets"], row["counts"], strict=True)
            ], (name, statuses)
        total = await pg.fetchval("select count(*) from subscriptions where resource_id = $1 and status = any($2)",
                                  resource, statuses)  # fmt: skip
        assert fast["profiles"] == total


async def test_quantiles_of_counts_interpolate_as_percentile_cont_does() -> None:
    assert cohorts.quantiles_of_counts([]) == [None, None, None]
    assert cohorts.quantiles_of_counts([(5, 1)]) == [5.0, 5.0, 5.0]
    # 0, 0, 10, 10, 10: rank 0.9 * 4 = 3.6 falls between two 10s; 0.5 * 4 = 2 is the first 10
    assert cohorts.quantiles_of_counts([(10, 3), (0, 2)], (0.5, 0.9, 0.25)) == [10.0, 10.0, 0.0]
    assert cohorts.quantiles_of_counts([(0, 1), (10, 1)], (0.5,)) == [5.0]


async def test_an_empty_list_has_no_quantiles_and_no_buckets(pg) -> None:
    resource = await make_resource(pg)
    result = await cohorts.lifetime(pg, resource, ["subscribed"])
    assert (result["profiles"], result["ever_active"]) == (0, 0)
    assert all(m == {"p50": None, "p90": None, "p99": None, "histogram": []} for m in result["measures"].values())


async def _bump_received(pg: asyncpg.Connection, resource: int) -> None:
    """Every member receives 40 more of the list's messages."""
    members = [r["profile_id"] for r in await pg.fetch("select profile_id from subscriptions where resource_id = $1",
                                                        resource)]  # fmt: skip
    at = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)
    await _stats(pg, [(m, p, "delivered", at, at) for m in await _messages(pg, resource, 40) for p in members])


async def test_a_snapshot_is_served_until_stale_then_refreshed_in_the_background(pg, database_url) -> None:
    rng = random.Random(7)
    resource = await _list_with_activity(pg, rng, 40)
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=2)
    young, stale, cold = (ReportSnapshots(max_age_s=age, sync_after_s=sync) for age, sync in
                          ((3600, 3600), (0, 3600), (0, 0)))  # fmt: skip
    try:
        first_at, first = await young.lifetime(pg, pool, resource, ["subscribed"])
        assert abs((dt.datetime.now(dt.UTC) - first_at).total_seconds()) < 60
        await _bump_received(pg, resource)
        # Young enough: the same snapshot, the change not in it yet.
        assert await young.lifetime(pg, pool, resource, ["subscribed"]) == (first_at, first)
        # Stale: still served as it was, and a refresh starts in the background.
        assert await stale.lifetime(pg, pool, resource, ["subscribed"]) == (first_at, first)
        await stale.settled()
        assert stale.background_refreshes == 1
        fresh_at, fresh = await young.lifetime(pg, pool, resource, ["subscribed"])
        assert fresh_at > first_at
        assert fresh == await cohorts.lifetime(pg, resource, ["subscribed"])
        assert fresh["measures"]["received"]["p50"] >= 40 > first["measures"]["received"]["p50"]
        # Past the synchronous limit: recomputed before answering.
        await _bump_received(pg, resource)
        now_at, now = await cold.lifetime(pg, None, resource, ["subscribed"])
        assert now_at > fresh_at and now["measures"]["received"]["p50"] >= 80
    finally:
        await pool.close()


async def test_one_refresher_at_a_time_per_key(pg, database_url) -> None:
    resource = await make_resource(pg)
    key = Key("lifetime", resource, "subscribed")
    computed = []

    async def compute(conn: asyncpg.Connection, as_of: dt.datetime) -> dict[str, int]:
        computed.append(as_of)
        return {"n": len(computed)}

    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("select pg_advisory_xact_lock(hashtextextended($1, 0))", key.lock_name)
            assert await report_snapshots.refresh(pg, key, compute, 0, wait=False) is None
            assert computed == [] and await report_snapshots.read(pg, key) is None
        done = await report_snapshots.refresh(pg, key, compute, 0, wait=False)
        assert done is not None and done.body == {"n": 1}
        # A waiting refresher that finds a young enough snapshot after the lock takes it as it is.
        kept = await report_snapshots.refresh(pg, key, compute, 3600, wait=True)
        assert kept is not None and kept.body == {"n": 1} and len(computed) == 1
    finally:
        await holder.close()


async def test_the_api_says_as_of_when_and_computes_explicit_ranges_now(settings, pg, redis) -> None:
    async with running_api(settings) as api:
        resource = await make_resource(pg)
        profiles = await make_profiles(pg, 3)
        two_weeks_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=14)
        for p in profiles[:2]:
            await pg.execute("insert into subscriptions (profile_id, resource_id, status, subscribed_at)"
                             " values ($1, $2, 'subscribed', $3)", p, resource, two_weeks_ago)  # fmt: skip
        snapshot = (await api.call("GET", f"/reports/cohorts?resource={resource}")).json()
        as_of = dt.datetime.fromisoformat(snapshot["as_of"])
        assert sum(c["profiles"] for c in snapshot["cohorts"]) == 2
        assert dt.datetime.fromisoformat(snapshot["to"]) == as_of
        await pg.execute("insert into subscriptions (profile_id, resource_id, status, subscribed_at)"
                         " values ($1, $2, 'subscribed', $3)", profiles[2], resource, two_weeks_ago)  # fmt: skip
        # The default range is the snapshot's (same as_of, the third profile not in it yet) ...
        again = (await api.call("GET", f"/reports/cohorts?resource={resource}")).json()
        assert again == snapshot
        # ... a range of the caller's own is computed now, exact.
        since = (two_weeks_ago - dt.timedelta(days=1)).date().isoformat()
        live = (await api.call("GET", f"/reports/cohorts?resource={resource}&from={since}")).json()
        assert sum(c["profiles"] for c in live["cohorts"]) == 3
        assert dt.datetime.fromisoformat(live["as_of"]) > as_of
        csv_headers = {**api.auth(), "accept": "text/csv"}
        table = await api.client.get(f"/api/v1/reports/cohorts?resource={resource}", headers=csv_headers)
        rows = list(csv.DictReader(io.StringIO(table.text)))
        assert rows and {r["as_of"] for r in rows} == {as_of.isoformat()}
        life = (await api.call("GET", f"/reports/lifetime?resource={resource}&status=subscribed")).json()
        assert life["profiles"] == 3 and dt.datetime.fromisoformat(life["as_of"]) > as_of
        life_csv = await api.client.get(f"/api/v1/reports/lifetime?resource={resource}&status=subscribed",
                                        headers=csv_headers)  # fmt: skip
        lines = list(csv.DictReader(io.StringIO(life_csv.text)))
        assert lines and {dt.datetime.fromisoformat(r["as_of"]) for r in lines} == {
            dt.datetime.fromisoformat(life["as_of"])
        }

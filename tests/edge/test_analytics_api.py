"""Analytics over the API: rollups kept by the flusher, message reports, click maps, lists, cohorts, links."""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from urllib.parse import urlsplit

from tests.rigs.api_helpers import running_api
from tests.rigs.flusher_helpers import drain, event, make_profiles, make_resource, now_us, push
from tracker.domain.analytics.report_links import report_link
from tracker.domain.verdict_store import Change, change_verdicts

HTML = """<html><body><h1>Spring sale</h1>
<p><a href="https://shop.example/sale">See the <b>sale</b></a></p>
<p><a href="https://shop.example/shoes">Shoes</a> and <a href="https://shop.example/hats">Hats</a></p>
</body></html>"""
HTML_V2 = HTML.replace("https://shop.example/hats", "https://shop.example/caps").replace(
    "</body>", '<a href="https://shop.example/new">New</a></body>')


async def campaign(api, pg, redis, settings):
    """A message with three links, three recipients, and their events pushed twice (a retry) and flushed."""
    message = (await api.call("POST", "/messages", json={"channel": "email", "name": "Spring sale 2024",
                                                          "content": HTML})).json()["id"]  # fmt: skip
    p1, p2, p3 = await make_profiles(pg, 3)
    t = now_us()
    events = [event(message, p, "delivered", ts_us=t) for p in (p1, p2, p3)]
    events += [event(message, p1, "opened", ts_us=t + 1), event(message, p1, "opened", ts_us=t + 2),
               event(message, p2, "opened", ts_us=t + 3),
               event(message, p1, "clicked", ts_us=t + 4, link_index=0),
               event(message, p1, "clicked", ts_us=t + 5, link_index=0),
               event(message, p2, "clicked", ts_us=t + 6, link_index=1),
               event(message, p1, "read", ts_us=t + 7, data={"dwell_s": 4.2}),
               event(message, p2, "read", ts_us=t + 8, data={"dwell_s": 10.0})]  # fmt: skip
    await push(redis, settings, events)
    await push(redis, settings, events)  # the same ids again: counted once
    await drain(settings)
    return message, (p1, p2, p3)


def stage(report, name):
    return next(s for s in report["stages"] if s["name"] == name)


async def test_message_report_counts_each_event_once_from_the_rollups(settings, pg, redis) -> None:
    async with running_api(settings) as api:
        message, _ = await campaign(api, pg, redis, settings)
        report = (await api.call("GET", f"/messages/{message}/report")).json()
        assert (stage(report, "delivered")["total"], stage(report, "delivered")["uniques"]) == (3, 3)
        assert (stage(report, "opened")["total"], stage(report, "opened")["uniques"]) == (3, 2)
        assert (stage(report, "clicked")["total"], stage(report, "clicked")["uniques"]) == (3, 2)
        assert stage(report, "opened")["rate"] == round(2 / 3, 4)
        assert stage(report, "complained") == {**stage(report, "complained"), "total": 0, "rate": 0.0}
        assert 4 <= report["dwell_s"]["p50"] <= 11
        assert sum(p["opened"] for p in report["series"]) == 3
        assert sum(p["read"] for p in report["series"]) == 2
        hourly = (await api.call("GET", f"/messages/{message}/report?interval=hour")).json()
        assert sum(p["clicked"] for p in hourly["series"]) == 3
        # a range with nothing in it: zeros, not an error
        empty = (await api.call("GET", f"/messages/{message}/report?from=2001-01-01&to=2001-01-03")).json()
        assert [p["opened"] for p in empty["series"]] == [0, 0]
        text = (await api.client.get(f"/api/v1/messages/{message}/report",
                                     headers={**api.auth(), "accept": "text/csv"})).text  # fmt: skip
        rows = list(csv.DictReader(io.StringIO(text)))
        assert sum(int(r["opened"]) for r in rows) == 3


async def test_clicks_per_link_with_text_share_and_version_history(settings, pg, redis) -> None:
    async with running_api(settings) as api:
        message, _ = await campaign(api, pg, redis, settings)
        clicks = (await api.call("GET", f"/messages/{message}/clicks")).json()
        assert [(c["index"], c["text"], c["total"], c["uniques"]) for c in clicks["links"]] == [
            (0, "See the sale", 2, 1), (1, "Shoes", 1, 1), (2, "Hats", 0, 0)]  # fmt: skip
        assert clicks["links"][0]["share"] == round(2 / 3, 4)
        await api.call("POST", f"/messages/{message}/versions", json={"content": HTML_V2})
        v2 = (await api.call("GET", f"/messages/{message}/clicks")).json()
        assert v2["version"] == 2 and v2["total"] == 0
        assert v2["versions"][1]["added"] == [3]
        assert v2["versions"][1]["changed"] == [
            {"index": 2, "old_url": "https://shop.example/hats", "new_url": "https://shop.example/caps"}]
        v1 = (await api.call("GET", f"/messages/{message}/clicks?version=1")).json()
        assert v1["total"] == 3 and v1["current_version"] == 2
        missing = await api.call("GET", f"/messages/{message}/clicks?version=9")
        assert missing.status_code == 404 and "version 9" in missing.json()["error"]["message"]
        unknown = await api.call("GET", "/messages/987654321/report")
        assert unknown.status_code == 404 and "987654321" in unknown.json()["error"]["message"]
        text = (await api.client.get(f"/api/v1/messages/{message}/clicks?version=1",
                                     headers={**api.auth(), "accept": "text/csv"})).text  # fmt: skip
        assert text.splitlines()[1].startswith("0,https://shop.example/sale,See the sale,2,1,")


async def test_verdict_changes_move_the_rollups_by_the_same_deltas(settings, pg, redis) -> None:
    async with running_api(settings) as api:
        message, _ = await campaign(api, pg, redis, settings)
        rows = await pg.fetch("select id, ts from events where message_id = $1 and kind = 'clicked'"
                              " and link_index = 0", message)  # fmt: skip
        async with pg.transaction():
            changed = await change_verdicts(pg, [Change(r["id"].bytes, r["ts"], "machine", ("burst",)) for r in rows])
        assert changed == 2
        assert await pg.fetchval("select human from message_link_clicks where message_id = $1 and idx = 0",
                                 message) == 0  # fmt: skip
        hourly = dict(await pg.fetch("select verdict, sum(total) from message_hourly where message_id = $1"
                                     " and kind = 'clicked' group by 1", message))  # fmt: skip
        assert hourly.get("machine", 0) >= 2 and sum(hourly.values()) == 3


async def test_lists_filter_and_page(settings, pg, redis) -> None:
    async with running_api(settings) as api:
        message, (p1, p2, p3) = await campaign(api, pg, redis, settings)
        found = (await api.call("GET", "/messages?name=SPRING sale&channel=email&limit=1000")).json()
        assert message in [m["id"] for m in found["messages"]]
        opened = (await api.call("GET", f"/profiles?opened={message}")).json()
        assert [p["id"] for p in opened["profiles"]] == [p1, p2]
        clicked = (await api.call("GET", f"/profiles?clicked={message}&limit=1")).json()
        assert [p["id"] for p in clicked["profiles"]] == [p1] and clicked["next_after"] == p1
        page2 = (await api.call("GET", f"/profiles?clicked={message}&limit=1&after={p1}")).json()
        assert [p["id"] for p in page2["profiles"]] == [p2] and page2["next_after"] is None
        since = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
        active = (await api.call("GET", "/profiles", params={"active_since": since, "after": p1 - 1,
                                                            "limit": 3})).json()  # fmt: skip
        assert [p["id"] for p in active["profiles"]] == [p1, p2]
        # A field of its own: profile fields are shared by every test of the session.
        await pg.execute(
            "insert into profile_fields (name, type) values ('analytics_plan', 'string') on conflict do nothing"
        )
        await pg.execute("update profiles set fields = '{\"analytics_plan\": \"gold\"}' where id = $1", p3)
        gold = (await api.call("GET", f"/profiles?field=analytics_plan:gold&after={p1 - 1}")).json()
        assert [p["id"] for p in gold["profiles"]] == [p3]
        resource = await make_resource(pg)
        await pg.execute("insert into subscriptions (profile_id, resource_id, status) values ($1, $2, 'unsubscribed')",
                         p2, resource)  # fmt: skip
        listed = (await api.call("GET", f"/profiles?resource={resource}&status=unsubscribed")).json()
        assert [p["id"] for p in listed["profiles"]] == [p2]
        for query, name in (("opened=x", "opened"), ("active_since=yesterday", "active_since"),
                            ("field=nosuch:1", "field"), ("limit=0", "limit")):  # fmt: skip
            bad = await api.call("GET", f"/profiles?{query}")
            assert bad.status_code == 422 and name in bad.json()["error"]["message"], query
        timeline = (await api.call("GET", f"/profiles/{p1}/events?limit=3")).json()
        assert [e["kind"] for e in timeline["events"]] == ["read", "clicked", "clicked"]
        rest = (await api.call("GET", f"/profiles/{p1}/events", params={"before": timeline["next_before"]})).json()
        assert [e["kind"] for e in rest["events"]] == ["opened", "opened", "delivered"]
        assert (await api.call("GET", "/profiles/987654321/events")).status_code == 404


async def test_cohorts_and_lifetime_of_a_list(settings, pg, redis) -> None:
    async with running_api(settings) as api:
        message, (p1, p2, p3) = await campaign(api, pg, redis, settings)
        resource = await make_resource(pg)
        # A lifetime in a list counts what its members did with the list's own messages.
        await pg.execute("update messages set resource_id = $1 where id = $2", resource, message)
        two_weeks_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=14)
        for p in (p1, p2, p3):
            await pg.execute("insert into subscriptions (profile_id, resource_id, status, subscribed_at)"
                             " values ($1, $2, 'subscribed', $3)", p, resource, two_weeks_ago)  # fmt: skip
        report = (await api.call("GET", f"/reports/cohorts?resource={resource}&period=week")).json()
        [cohort] = report["cohorts"]
        assert cohort["profiles"] == 3
        assert cohort["active"][0] == 0 and sum(cohort["active"]) == 2  # p1 and p2 active this week
        assert max(cohort["share"]) == round(2 / 3, 4)
        none = (await api.call("GET", f"/reports/cohorts?resource={resource}&from=2001-01-01&to=2001-03-01")).json()
        assert none["cohorts"] == []
        too_long = await api.call("GET", f"/reports/cohorts?resource={resource}&from=2001-01-01&to=2009-01-01")
        assert too_long.status_code == 422 and "to" in too_long.json()["error"]["message"]
        assert (await api.call("GET", "/reports/cohorts?resource=987654321")).status_code == 404
        assert "resource" in (await api.call("GET", "/reports/cohorts")).json()["error"]["message"]
        life = (await api.call("GET", f"/reports/lifetime?resource={resource}")).json()
        assert life["profiles"] == 3 and life["ever_active"] == 2
        received = life["measures"]["received"]
        assert sum(b["profiles"] for b in received["histogram"]) == 3 and received["p50"] == 1
        assert sum(b["profiles"] for b in life["measures"]["clicked"]["histogram"] if b["low"] >= 1) == 2


async def test_report_links_open_pages_until_they_expire(settings, pg, redis) -> None:
    async with running_api(settings) as api:
        message, _ = await campaign(api, pg, redis, settings)
        made = await api.call("POST", "/report-links", json={"message_id": message, "page": "clickmap"})
        assert made.status_code == 201
        url = urlsplit(made.json()["url"])
        page = await api.client.get(f"{url.path}?{url.query}")
        assert page.status_code == 200 and 'data-clicks="2"' in page.text
        assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none' covers scripts
        assert "default-src 'none'" in page.headers["content-security-policy"]
        funnel = await api.client.get(f"/reports/messages/{message}?{url.query}")
        assert funnel.status_code == 200 and "<svg" in funnel.text
        forged = await api.client.get(f"/reports/messages/{message + 1}?{url.query}")
        assert forged.status_code == 403
        assert (await api.client.get(f"/reports/messages/{message}")).status_code == 403
        old = urlsplit(report_link(settings, message, now=time.time() - 7 * 86400).url)
        expired = await api.client.get(f"{old.path}?{old.query}")
        assert expired.status_code == 403 and "expired" in expired.text
        missing = await api.call("POST", "/report-links", json={"message_id": 987654321})
        assert missing.status_code == 404

"""Human or machine: each rule driven with real user agents and request shapes, through the real edge
and flusher, then the settle window, a flusher killed inside it, and reclassification.

Sources of the fixtures (user agents and networks as their owners publish or document them):
- Gmail's image proxy UA "... (via ggpht.com GoogleImageProxy)": Google's image-proxy notes for senders;
- Yahoo's "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html": that help page;
- Apple Mail Privacy Protection fetching with a bare "Mozilla/5.0" from Apple's network (17.0.0.0/8):
  described by every ESP since iOS 15 (e.g. Litmus and SparkPost write-ups on MPP);
- Microsoft Defender Safe Links fetching from Exchange Online Protection's published range 40.92.0.0/15
  ("Microsoft 365 URLs and IP address ranges"), with a desktop Chrome UA, at delivery time;
- a phone browser: Safari on iOS 17 with Fetch Metadata headers (the W3C Fetch Metadata spec).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
from pathlib import Path

import asyncpg
import msgspec
import pytest

from flusher.worker import Flusher
from tests.rigs.api_helpers import running_api
from tests.rigs.edge_helpers import running_edge
from tests.rigs.flusher_helpers import (
    ensure_field,
    event,
    flusher_settings,
    make_message,
    make_profiles,
    make_resource,
    now_us,
    push,
    start_flusher,
    wait_exit,
    wait_until,
)
from tracker.config import Settings
from tracker.contract import signals
from tracker.contract.events import decode_batch
from tracker.contract.keys import ENTRY_FIELD, committed_streams, hooks_count_key
from tracker.contract.tokens import Channel, TokenKind, mint
from tracker.domain.hook_definitions import event_document
from tracker.domain.link_tables import Link
from tracker.domain.machine_networks import MachineNetworks, NetworkListError, parse
from tracker.domain.messages import register_message
from tracker.domain.verdicts import Rules, judge
from tracker.ops.reclassify import reclassify

GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
YAHOO = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
APPLE_MPP = "Mozilla/5.0"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
          "Safari/537.36")  # fmt: skip
IPHONE_SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                 "Version/17.4 Mobile/15E148 Safari/604.1")  # fmt: skip
NAVIGATION = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
              "sec-fetch-mode": "navigate", "sec-fetch-site": "none", "sec-fetch-user": "?1"}  # fmt: skip
IMAGE = {"accept": "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"}
SECOND = 1_000_000
RULES = Rules(too_fast_s=3.0, burst_window_s=10.0, burst_min_links=3, honeypot_window_s=60.0)


# -- the rules alone --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "ua_class", "bits", "since_delivery_s", "network", "expected"),
    [
        ("opened", "proxy", 0, 600, None, ("human", ("image_proxy",))),  # Gmail/Yahoo fetch at reading time
        ("opened", "proxy", 0, 1, None, ("machine", ("privacy_prefetch",))),  # Gmail's prefetch at delivery
        ("opened", "bare", 0, 600, None, ("machine", ("privacy_prefetch",))),  # Apple MPP
        ("opened", "webkit", 0, 1, None, ("machine", ("privacy_prefetch",))),  # stripped WebKit at delivery
        ("opened", "webkit", 0, 600, None, ("human", ("mail_client",))),  # the same UA when someone reads
        ("clicked", "desktop", 0, 1, "microsoft-eop", ("machine", ("machine_network", "too_fast"))),
        ("clicked", "scanner", signals.HEAD, 1, None, ("machine", ("head", "scanner_ua", "too_fast"))),
        ("clicked", "mobile", signals.NAVIGATE, 40, None, ("human", ("browser",))),
        ("clicked", "mobile", signals.HEAD, 40, None, ("machine", ("head",))),
        ("clicked", "desktop", signals.PREFETCH, 40, None, ("machine", ("prefetch_header",))),
        ("clicked", "http_library", signals.NO_ACCEPT, 40, None, ("machine", ("http_library",))),
        ("clicked", "other", 0, None, None, ("unknown", ("no_signal",))),
        ("delivered", "", 0, None, None, ("unknown", ())),
    ],
)
def test_rules(kind, ua_class, bits, since_delivery_s, network, expected) -> None:
    ts = 1_800_000_000 * SECOND
    sent = None if since_delivery_s is None else ts - since_delivery_s * SECOND
    assert judge(kind, ts, ua_class, bits, sent_at_us=sent, network=network, rules=RULES) == expected


def test_a_malformed_network_list_is_refused_with_its_line_and_the_last_good_one_stays(tmp_path: Path) -> None:
    with pytest.raises(NetworkListError, match=r"list.txt:3: '10.0.0.300/8' is not an IP network"):
        parse("# ok\n40.92.0.0/15 eop\n10.0.0.300/8\n", "list.txt")
    path = tmp_path / "networks.txt"
    path.write_text("40.92.0.0/15 microsoft-eop\n")
    networks = MachineNetworks(str(path), check_every_s=0)
    assert networks.current().label_of("40.93.7.0/24") == "microsoft-eop"
    assert networks.current().label_of("203.0.113.0/24") is None
    path.write_text("203.0.113.0/24 ours\nnot a network at all\n")
    os.utime(path, ns=(1, 2))  # a new stamp even within the file system's time resolution
    assert networks.current().label_of("40.93.7.0/24") == "microsoft-eop"  # the last good list
    path.write_text("203.0.113.0/24 ours\n")
    os.utime(path, ns=(3, 4))
    assert networks.current().label_of("203.0.113.0/24") == "ours"  # reloaded without a restart
    assert networks.current().label_of("2001:db8::/48") is None


# -- through the edge and the flusher ------------------------------------------------------------


def verdict_settings(settings: Settings, **flusher: float) -> Settings:
    settings = settings.replace(edge={"trust_forwarded_for": True})
    return flusher_settings(settings, settle_s=4.0, too_fast_s=RULES.too_fast_s,
                            burst_window_s=RULES.burst_window_s, burst_links=RULES.burst_min_links,
                            honeypot_window_s=RULES.honeypot_window_s, **flusher)  # fmt: skip


async def rows(pg, message_id: int) -> dict[tuple[int, str, int], list[tuple[str, tuple[str, ...]]]]:
    found: dict = {}
    for r in await pg.fetch("select profile_id, kind, link_index, verdict, reasons from events"
                            " where message_id = $1 order by ts", message_id):  # fmt: skip
        found.setdefault((r["profile_id"], r["kind"], r["link_index"]), []).append((r["verdict"], tuple(r["reasons"])))
    return found


async def fields_of(pg, profile_id: int) -> str:
    return await pg.fetchval("select fields::text from profiles where id = $1", profile_id)


@pytest.mark.slow  # several seconds of a real outage or processes: the full run has it
async def test_every_rule_through_the_real_edge_and_effects_after_the_settle_window(settings, redis, pg) -> None:
    settings = verdict_settings(settings)
    await ensure_field(pg, "clicked_link", "boolean")
    resource = await make_resource(pg)
    html = (f'<html><body><a href="https://shop.example/a" update-clicked_link="true">a</a>'
            f'<a href="https://shop.example/b" subscribe-to="{resource}">b</a>'
            f'<a href="https://shop.example/c">c</a></body></html>')  # fmt: skip
    registered = await register_message(pg, "email", "verdicts", html, honeypot_url="https://edge.example/")
    message, version = registered.message_id, registered.version
    assert [link.attributes.get("tracker-honeypot") for link in registered.links] == [None, None, None, "1"]
    safe, phone, burst, trap, gmail, yahoo, mpp = await make_profiles(pg, 7)
    await redis.set(hooks_count_key(settings.stream_prefix), 1)  # a hook exists: the committed feed runs

    flusher = Flusher(settings)
    running = asyncio.create_task(flusher.run())
    try:
        t = now_us()
        delivered = [event(message, safe, "delivered", ts_us=t - 1 * SECOND)]
        delivered += [event(message, p, "delivered", ts_us=t - 40 * SECOND) for p in (phone,)]
        delivered += [event(message, p, "delivered", ts_us=t - 600 * SECOND) for p in (burst, trap, gmail, yahoo, mpp)]
        await push(redis, settings, delivered)
        await wait_until(lambda: _count(pg, message, "delivered", 7), 20, "the deliveries stored")

        def click(profile: int, index: int) -> str:
            return "/c/" + mint(settings.signing_keys, 1, TokenKind.CLICK, Channel.EMAIL, message, profile, version,
                                index)  # fmt: skip

        def pixel(profile: int) -> str:
            return "/o/" + mint(settings.signing_keys, 1, TokenKind.OPEN, Channel.EMAIL, message, profile)

        async with running_edge(settings) as (_app, client):

            async def get(path: str, ip: str, ua: str, headers: dict) -> None:
                response = await client.get(path, headers={"x-forwarded-for": ip, "user-agent": ua, **headers})
                assert response.status_code in (200, 302), path

            # Safe Links: the gateway fetches every link at delivery time from Microsoft's network.
            for index in range(3):
                await get(click(safe, index), "40.93.12.34", CHROME, NAVIGATION)
            # A person on a phone, 40 s after delivery, from a home network.
            await get(click(phone, 0), "198.51.100.7", IPHONE_SAFARI, NAVIGATION)
            await get(click(phone, 1), "198.51.100.7", IPHONE_SAFARI, NAVIGATION)
            # A burst over every link of the message within 2 s from one prefix.
            for index in range(3):
                await get(click(burst, index), "192.0.2.10", CHROME, NAVIGATION)
            # A honeypot fetch, then a "click" on a real link from the same prefix.
            await get(click(trap, 3), "100.64.5.5", CHROME, NAVIGATION)
            await get(click(trap, 0), "100.64.5.5", CHROME, NAVIGATION)
            # Opens: Gmail's and Yahoo's proxies at reading time, Apple's MPP fetch.
            await get(pixel(gmail), "66.249.84.1", GMAIL, IMAGE)
            await get(pixel(yahoo), "74.6.1.1", YAHOO, IMAGE)
            await get(pixel(mpp), "17.58.1.1", APPLE_MPP, {"accept": "*/*"})
            await wait_until(lambda: _count(pg, message, "clicked", 10), 20, "the first clicks stored")
            # Inside the settle window: stored and counted, no effect yet, not on the committed streams.
            assert await fields_of(pg, phone) == "{}"
            assert await _waiting(pg, message, 10)
            assert not [e for e in await committed(redis, settings) if e.kind == "clicked"]
            # The Safe Links victim's own click, once the gateway's timing window is over.
            await asyncio.sleep(RULES.too_fast_s + 0.2)
            await get(click(safe, 0), "203.0.113.50", IPHONE_SAFARI, NAVIGATION)

        await wait_until(lambda: _settled(pg, message, 11), 30, "every click settled")
    finally:
        flusher.close()
        await asyncio.wait_for(running, 30)

    found = await rows(pg, message)
    assert found[safe, "clicked", 1] == [("machine", ("burst", "machine_network", "too_fast"))]
    assert found[safe, "clicked", 0] == [("machine", ("burst", "machine_network", "too_fast")),
                                         ("human", ("browser",))]  # fmt: skip
    assert found[phone, "clicked", 0] == found[phone, "clicked", 1] == [("human", ("browser",))]
    assert {found[burst, "clicked", i][0] for i in range(3)} == {("machine", ("burst",))}
    assert found[trap, "clicked", 3] == found[trap, "clicked", 0] == [("machine", ("honeypot",))]
    assert found[gmail, "opened", -1] == found[yahoo, "opened", -1] == [("human", ("image_proxy",))]
    assert found[mpp, "opened", -1] == [("machine", ("privacy_prefetch",))]
    # /metrics (through the flusher's snapshot) counts verdicts by reason.
    counted = flusher.metrics.snapshot().verdicts
    assert counted["machine/burst"] >= 6 and counted["human/image_proxy"] == 2 and counted["human/browser"] == 3

    # Effects: the people's clicks only, once.
    assert await fields_of(pg, phone) == '{"clicked_link": true}'
    assert await fields_of(pg, safe) == '{"clicked_link": true}'  # from the person's own click
    for profile in (burst, trap):
        assert await fields_of(pg, profile) == "{}"
    subscribed = await pg.fetch("select profile_id from subscriptions where resource_id = $1", resource)
    assert [r["profile_id"] for r in subscribed] == [phone]  # the gateway's fetch of link b subscribed no one

    # Counters split by verdict, through the API.
    async with running_api(settings) as api:
        stats = (await api.call("GET", f"/messages/{message}/stats")).json()["counters"]
    clicked, opened = stats["clicked"], stats["opened"]
    assert (clicked["total"], clicked["human"], clicked["machine"]) == (11, 3, 8)
    assert (clicked["uniques"], clicked["human_uniques"], clicked["machine_uniques"]) == (4, 2, 3)
    assert clicked["reasons"]["machine"] == {"burst": 6, "honeypot": 2, "machine_network": 3, "too_fast": 3}
    assert (opened["total"], opened["human"], opened["machine"]) == (3, 2, 1)
    assert opened["reasons"] == {"human": {"image_proxy": 2}, "machine": {"privacy_prefetch": 1}}

    # The action hooks' copy: each click once, after settling, with its final verdict.
    forwarded = [e for e in await committed(redis, settings) if e.kind == "clicked"]
    assert len(forwarded) == len({e.id for e in forwarded}) == 11
    assert sum(e.verdict == "human" for e in forwarded) == 3
    assert {e.verdict for e in await committed(redis, settings) if e.kind == "opened"} == {"human", "machine"}


async def _count(pg, message: int, kind: str, wanted: int) -> bool:
    return await pg.fetchval("select count(*) from events where message_id = $1 and kind = $2", message, kind) >= wanted


async def _settled(pg, message: int, wanted: int) -> bool:
    return await pg.fetchval("select count(*) from settling_clicks where message_id = $1 and state = 'forwarded'",
                             message) >= wanted  # fmt: skip


async def committed(redis, settings: Settings) -> list:
    found = []
    for stream in committed_streams(settings.stream_prefix, settings.stream_shards):
        for _id, fields in await redis.xrange(stream):
            found += decode_batch(fields[ENTRY_FIELD])
    return found


async def test_a_flusher_killed_inside_the_settle_window_loses_and_doubles_nothing(settings, redis, pg) -> None:
    await ensure_field(pg, "clicked_link", "boolean")
    resource = await make_resource(pg)
    message = await make_message(pg, links=[Link("https://example.com/a", {"update-clicked_link": "true",
                                                                            "subscribe-to": str(resource)})])
    profiles = await make_profiles(pg, 20)
    await redis.set(hooks_count_key(settings.stream_prefix), 1)
    variables = {"FLUSHER_SETTLE_S": "3", "FLUSHER_BATCH_MAX_AGE_MS": "20"}
    first = start_flusher(settings, FLUSHER_CONSUMER="first", **variables)
    try:
        clicks = [event(message, p, "clicked", link_index=0, ua_class="mobile", signals=signals.NAVIGATE)
                  for p in profiles]  # fmt: skip
        await push(redis, settings, clicks)
        await wait_until(lambda: _waiting(pg, message, 20), 20, "the clicks stored and waiting")
        first.send_signal(signal.SIGKILL)
        await wait_exit(first, 10)
    finally:
        if first.poll() is None:
            first.kill()
    assert await pg.fetchval("select count(*) from profiles where id = any($1) and fields ? 'clicked_link'",
                             profiles) == 0  # fmt: skip
    second = start_flusher(settings, FLUSHER_CONSUMER="second", **variables)
    try:
        await wait_until(lambda: _settled(pg, message, 20), 30, "every click settled by the second flusher")
        second.send_signal(signal.SIGTERM)
        assert await wait_exit(second, 15) == 0
    finally:
        if second.poll() is None:
            second.kill()
    assert await pg.fetchval("select count(*) from profiles where id = any($1) and fields = '{\"clicked_link\": true}'",
                             profiles) == 20  # fmt: skip
    assert await pg.fetchval("select count(*) from subscriptions where resource_id = $1 and status = 'subscribed'",
                             resource) == 20  # fmt: skip
    assert await pg.fetchval("select total from message_counters where message_id = $1 and kind = 'clicked'",
                             message) == 20  # fmt: skip
    forwarded = [e for e in await committed(redis, settings) if e.kind == "clicked"]
    assert sorted(e.id for e in forwarded) == sorted(e.id for e in clicks)  # each once


async def _waiting(pg, message: int, wanted: int) -> bool:
    return await pg.fetchval("select count(*) from settling_clicks where message_id = $1 and state = 'waiting'",
                             message) >= wanted  # fmt: skip


async def test_reclassify_after_a_list_change_updates_every_counter_exactly(settings, redis, pg, tmp_path) -> None:
    networks = tmp_path / "networks.txt"
    networks.write_text("40.92.0.0/15 microsoft-eop\n")
    settings = flusher_settings(settings, machine_networks_file=str(networks))
    message = await make_message(pg, links=[Link("https://example.com/a"), Link("https://example.com/b")])
    a, b, c = await make_profiles(pg, 3)
    t = now_us() - 3600 * SECOND
    # b and c click from a scanner network the list does not know yet; a from home.
    events = [event(message, a, "clicked", link_index=0, ts_us=t, ip_prefix="198.51.100.0/24", ua_class="mobile"),
              event(message, b, "clicked", link_index=0, ts_us=t + SECOND, ip_prefix="198.18.7.0/24"),
              event(message, b, "clicked", link_index=1, ts_us=t + 20 * SECOND, ip_prefix="198.18.7.0/24"),
              event(message, c, "opened", ts_us=t + 2 * SECOND, ip_prefix="198.18.9.0/24")]  # fmt: skip
    await push(redis, settings, events)
    flusher = Flusher(settings, burst=True)
    await flusher.run()

    async def counts() -> dict:
        found = await pg.fetch("select kind, total, human, human_uniques, machine, machine_uniques"
                               " from message_counters where message_id = $1", message)  # fmt: skip
        return {r["kind"]: tuple(r)[1:] for r in found}

    assert await counts() == {"clicked": (3, 3, 2, 0, 0), "opened": (1, 1, 1, 0, 0)}
    networks.write_text("40.92.0.0/15 microsoft-eop\n198.18.0.0/15 test-scanner\n")
    since = dt.datetime.fromtimestamp((t - SECOND) / SECOND, dt.UTC)
    until = dt.datetime.now(dt.UTC)
    scan = await asyncpg.connect(settings.database_url)
    try:
        # One message: the test database is shared with other tests' events.
        first = await reclassify(pg, scan, settings, since, until, message)
        again = await reclassify(pg, scan, settings, since, until, message)
    finally:
        await scan.close()
    assert (first.judged, first.changed) == (4, 3)
    assert first.moves == {("human", "machine"): 3}
    assert await counts() == {"clicked": (3, 1, 1, 2, 1), "opened": (1, 0, 0, 1, 1)}
    assert (again.judged, again.changed) == (4, 0)  # twice changes nothing
    assert await counts() == {"clicked": (3, 1, 1, 2, 1), "opened": (1, 0, 0, 1, 1)}
    reasons = await pg.fetch("select kind, verdict, reason, total from message_verdict_reasons"
                             " where message_id = $1 and total <> 0 order by 1, 2, 3", message)  # fmt: skip
    assert [tuple(r) for r in reasons] == [
        ("clicked", "human", "browser", 1), ("clicked", "machine", "machine_network", 2),
        ("opened", "machine", "machine_network", 1),
    ]  # fmt: skip


async def test_unknown_clicks_act_only_when_the_setting_says_so(settings, redis, pg) -> None:
    await ensure_field(pg, "clicked_link", "boolean")
    message = await make_message(pg, links=[Link("https://example.com/a", {"update-clicked_link": "true"})])
    first, second = await make_profiles(pg, 2)
    # An app's in-app browser no rule knows: no signal either way.
    await push(redis, settings, [event(message, first, "clicked", link_index=0, ua_class="other")])
    await Flusher(flusher_settings(settings, effects_for_unknown=False), burst=True).run()
    await push(redis, settings, [event(message, second, "clicked", link_index=0, ua_class="other")])
    await Flusher(flusher_settings(settings, effects_for_unknown=True), burst=True).run()
    assert await fields_of(pg, first) == "{}"
    assert await fields_of(pg, second) == '{"clicked_link": true}'
    verdicts = await pg.fetch("select verdict, reasons from events where message_id = $1", message)
    assert {(r["verdict"], tuple(r["reasons"])) for r in verdicts} == {("unknown", ("no_signal",))}


def test_action_hook_documents_carry_the_verdict() -> None:
    judged = event(1, 2, "clicked", link_index=0)
    document = event_document(msgspec.structs.replace(judged, verdict="machine", reasons=("burst", "too_fast")))
    assert (document["verdict"], document["reasons"]) == ("machine", ["burst", "too_fast"])
    assert event_document(event(1, 2, "delivered"))["verdict"] == "unknown"

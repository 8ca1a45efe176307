"""SMS delivery reports: the generic format, Twilio status callbacks and SMPP receipts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import parse_qsl, quote

import pytest

from tests.rigs.edge_helpers import running_edge, wait_for_events
from tests.rigs.flusher_helpers import counters, drain, make_message, make_profiles
from tests.rigs.report_examples import assert_no_events, example, mint_ref
from tracker.contract.tokens import Channel

GENERIC_SECRET = "generic-sms-secret-0123456789"
TWILIO_TOKEN = "12345678901234567890123456789012"
SMPP_AUTH = ("gateway", "smpp-password-0123456789")
MESSAGE, PROFILE = 909, 4711


@pytest.fixture
def report_settings(settings):
    return settings.replace(
        public_url="https://track.example.com",
        reports={"generic_sms_secret": GENERIC_SECRET, "twilio_auth_token": TWILIO_TOKEN,
                 "smpp_basic_auth": ":".join(SMPP_AUTH)},
    )  # fmt: skip


@pytest.fixture
def ref(settings) -> str:
    return mint_ref(settings, Channel.SMS, MESSAGE, PROFILE)


def twilio_signature(url: str, body: bytes, token: str = TWILIO_TOKEN) -> str:
    """As Twilio documents it: the full URL, then each POST parameter (sorted by name) as name + value."""
    params = sorted(parse_qsl(body.decode(), keep_blank_values=True))
    data = url + "".join(name + value for name, value in params)
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


async def post_twilio(client, ref: str, name: str, token: str = TWILIO_TOKEN):
    path = f"/reports/sms/twilio?tracker_ref={quote(ref)}"
    body = example(name)
    signature = twilio_signature("https://track.example.com" + path, body, token)
    return await client.post(path, content=body, headers={
        "content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature,
    })  # fmt: skip


async def test_twilio_status_callbacks_map_to_delivered_and_undelivered_with_the_error_code(report_settings, redis,
                                                                                           ref):
    async with running_edge(report_settings) as (_app, client):
        responses = [await post_twilio(client, ref, name)
                     for name in ("twilio_undelivered.form", "twilio_delivered.form", "twilio_sent.form")]  # fmt: skip
        events = await wait_for_events(redis, report_settings, 2)
    assert [r.json() for r in responses] == [
        {"recorded": 1, "bad_ref": 0, "untracked": 0},
        {"recorded": 1, "bad_ref": 0, "untracked": 0},
        {"recorded": 0, "bad_ref": 0, "untracked": 1},  # "sent" is not a delivery report
    ]
    by_kind = {e.kind: e for e in events}
    assert {(e.channel, e.message_id, e.profile_id) for e in events} == {("sms", MESSAGE, PROFILE)}
    assert by_kind["undelivered"].data == {"provider": "twilio", "status": "undelivered", "code": "30003"}
    assert by_kind["undelivered"].ts_us == 1717171740 * 1_000_000  # RawDlrDoneDate 2405311609
    assert by_kind["delivered"].data == {"provider": "twilio", "status": "delivered"}


async def test_twilio_signature_over_another_url_or_token_gets_401(report_settings, redis, ref):
    async with running_edge(report_settings) as (_app, client):
        wrong_token = await post_twilio(client, ref, "twilio_delivered.form", token="0" * 32)
        body = example("twilio_delivered.form")
        # Signed without the query string: the ref could have been swapped.
        signature = twilio_signature("https://track.example.com/hooks/sms/twilio", body)
        swapped = await client.post(f"/reports/sms/twilio?tracker_ref={quote(ref)}", content=body, headers={
            "content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature,
        })  # fmt: skip
        await assert_no_events(redis, report_settings)
    assert (wrong_token.status_code, swapped.status_code) == (401, 401)


async def test_smpp_receipts_map_stat_and_keep_the_error_code(report_settings, redis, ref):
    async with running_edge(report_settings) as (_app, client):
        for name in ("smpp_delivered.txt", "smpp_undelivered.txt"):
            response = await client.post(f"/reports/sms/smpp?tracker_ref={quote(ref)}", content=example(name),
                                         auth=SMPP_AUTH, headers={"content-type": "text/plain"})  # fmt: skip
            assert response.json() == {"recorded": 1, "bad_ref": 0, "untracked": 0}
        events = await wait_for_events(redis, report_settings, 2)
    by_kind = {e.kind: e for e in events}
    assert {(e.channel, e.message_id, e.profile_id) for e in events} == {("sms", MESSAGE, PROFILE)}
    assert by_kind["delivered"].data == {"provider": "smpp", "status": "DELIVRD", "code": "000"}
    assert by_kind["undelivered"].data == {"provider": "smpp", "status": "UNDELIV", "code": "027"}
    assert by_kind["undelivered"].ts_us == 1717172102 * 1_000_000  # done date 240531161502, UTC


async def test_smpp_without_credentials_gets_401_and_garbage_gets_400(report_settings, redis, ref):
    url = f"/reports/sms/smpp?tracker_ref={quote(ref)}"
    async with running_edge(report_settings) as (_app, client):
        text = {"content-type": "text/plain"}
        anonymous = await client.post(url, content=example("smpp_delivered.txt"), headers=text)
        wrong = await client.post(url, content=example("smpp_delivered.txt"), auth=("gateway", "guess"), headers=text)
        garbage = await client.post(url, content=b"hello world", auth=SMPP_AUTH, headers=text)
        await assert_no_events(redis, report_settings)
    assert [r.status_code for r in (anonymous, wrong, garbage)] == [401, 401, 400]


async def test_generic_sms_reports(report_settings, redis, ref):
    body = example("generic_sms.json", ref)
    stamp = str(int(time.time()))
    mac = hmac.new(GENERIC_SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {"x-tracker-timestamp": stamp, "x-tracker-signature": "sha256=" + mac, "content-type": "application/json"}
    async with running_edge(report_settings) as (_app, client):
        response = await client.post("/reports/sms/generic", content=body, headers=headers)
        bad = await client.post("/reports/sms/generic", content=body, headers={**headers, "x-tracker-signature": "0"})
        events = await wait_for_events(redis, report_settings, 2)
    assert (response.status_code, bad.status_code) == (200, 401)
    assert sorted((e.kind, e.channel, e.message_id, e.profile_id) for e in events) == [
        ("delivered", "sms", MESSAGE, PROFILE), ("undelivered", "sms", MESSAGE, PROFILE)]  # fmt: skip
    assert [e.data for e in events if e.kind == "undelivered"] == [
        {"provider": "generic", "reason": "absent subscriber", "code": "27"}]  # fmt: skip


async def test_sms_redeliveries_get_the_same_event_ids(report_settings, redis, ref):
    async with running_edge(report_settings) as (_app, client):
        for _attempt in range(2):
            await post_twilio(client, ref, "twilio_undelivered.form")
            await client.post(f"/reports/sms/smpp?tracker_ref={quote(ref)}", content=example("smpp_delivered.txt"),
                              auth=SMPP_AUTH, headers={"content-type": "text/plain"})  # fmt: skip
        events = await wait_for_events(redis, report_settings, 4)
    assert len(events) == 4 and len({(e.id, e.ts_us) for e in events}) == 2


async def test_a_twilio_retry_without_a_carrier_time_gets_the_time_first_seen(report_settings, redis, ref):
    form = example("twilio_undelivered.form").replace(b"&RawDlrDoneDate=2405311609", b"")
    path = f"/reports/sms/twilio?tracker_ref={quote(ref)}"
    headers = {"x-twilio-signature": twilio_signature("https://track.example.com" + path, form),
               "content-type": "application/x-www-form-urlencoded"}  # fmt: skip
    async with running_edge(report_settings) as (_app, client):
        for _attempt in range(2):
            assert (await client.post(path, content=form, headers=headers)).status_code == 200
        first, second = await wait_for_events(redis, report_settings, 2)
    assert (first.id, first.ts_us) == (second.id, second.ts_us)


async def test_a_twilio_retry_reaching_another_edge_process_is_stored_once(report_settings, redis, pg):
    message = await make_message(pg, channel="sms")
    (profile,) = await make_profiles(pg, 1)
    ref = mint_ref(report_settings, Channel.SMS, message, profile)
    form = example("twilio_undelivered.form").replace(b"&RawDlrDoneDate=2405311609", b"")
    path = f"/reports/sms/twilio?tracker_ref={quote(ref)}"
    headers = {"x-twilio-signature": twilio_signature("https://track.example.com" + path, form),
               "content-type": "application/x-www-form-urlencoded"}  # fmt: skip
    stats, seen = [], []
    for _process in range(2):  # each edge process remembers only its own first sightings
        async with running_edge(report_settings) as (_app, client):
            assert (await client.post(path, content=form, headers=headers)).status_code == 200
        seen += await wait_for_events(redis, report_settings, 1)
        stats.append((await drain(report_settings)).stats)  # stores, acknowledges and trims the stream
    first, second = seen
    # Stored at two arrival times under one id with no time in it: the flusher finds the first by id.
    assert first.id == second.id and first.id[:6] == bytes(6) and first.ts_us < second.ts_us
    assert (stats[0]["stored"], stats[1]["stored"], stats[1]["duplicates"]) == (1, 0, 1)
    rows = await pg.fetch("select kind, extract(epoch from ts) * 1e6 as ts_us from events where message_id = $1",
                          message)  # fmt: skip
    assert [(row["kind"], int(row["ts_us"])) for row in rows] == [("undelivered", first.ts_us)]
    total, uniques = (await counters(pg, message))["undelivered"]
    assert (total, uniques) == (1, 1)

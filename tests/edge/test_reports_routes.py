"""What every webhook endpoint does alike: 404 for unknown or unconfigured providers, 413 for big
bodies, provider settings checked at start, deterministic event ids, stored facts kept short,
and exactly one row per provider event once the flusher has run."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from edge.app import create_app
from edge.reports.base import MAX_TEXT, facts, parse_time_us, report_event_id
from tests.rigs.edge_helpers import running_edge, wait_for_events
from tests.rigs.flusher_helpers import drain, make_message, make_profiles, stored_ids
from tests.rigs.report_examples import assert_no_events, example, mint_ref
from tracker.config import SettingsError
from tracker.contract.tokens import Channel

SECRET = "generic-email-secret-0123456789"


@pytest.fixture
def report_settings(settings):
    return settings.replace(reports={"generic_email_secret": SECRET, "postmark_basic_auth": "pm:pw-0123456789",
                                     "max_body_bytes": 4096})  # fmt: skip


def signed(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"x-tracker-timestamp": stamp, "x-tracker-signature": "sha256=" + mac, "content-type": "application/json"}


async def test_unknown_and_unconfigured_providers_get_404(report_settings, redis):
    async with running_edge(report_settings) as (_app, client):
        unknown = await client.post("/hooks/email/sparkpost", content=b"[]")
        wrong_channel = await client.post("/hooks/push/generic", content=b"[]")
        not_configured = await client.post("/hooks/sms/generic", content=b"[]")  # no secret set
        also_not = await client.post("/hooks/email/mailgun", content=b"{}")
        get = await client.get("/hooks/email/generic")
        await assert_no_events(redis, report_settings)
    assert [r.status_code for r in (unknown, wrong_channel, not_configured, also_not)] == [404] * 4
    assert get.status_code == 405


@pytest.mark.parametrize(
    ("path", "setting", "value"),
    [
        ("/hooks/email/generic", "generic_email_secret", SECRET),
        ("/hooks/sms/generic", "generic_sms_secret", SECRET),
        ("/hooks/email/ses", "ses_topic_arns", "arn:aws:sns:us-east-1:123456789012:ses"),
        ("/hooks/email/sendgrid", "sendgrid_public_key",
         "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEx8egFSeO/rqMp/wLWQxlkeXqn1HVlLNdZyGVW6ycba+MX2G4HIEB/BxNDv6iD3uOSBIw4Jhf"
         "ipJNPkMIJ8MxqQ=="),
        ("/hooks/email/mailgun", "mailgun_signing_key", SECRET),
        ("/hooks/email/postmark", "postmark_basic_auth", "pm:pw-0123456789"),
        ("/hooks/sms/twilio", "twilio_auth_token", SECRET),
        ("/hooks/sms/smpp", "smpp_basic_auth", "gw:pw-0123456789"),
    ],
)  # fmt: skip
async def test_every_provider_refuses_an_oversize_body_with_413(settings, redis, path, setting, value):
    limited = settings.replace(reports={"max_body_bytes": 1024, setting: value})
    async with running_edge(limited) as (_app, client):
        response = await client.post(path, content=b"x" * 1025)
        await assert_no_events(redis, limited)
    assert response.status_code == 413


async def test_a_body_over_the_limit_gets_413_whether_declared_or_streamed(report_settings, redis):
    big = b"[" + b" " * 5000 + b"]"

    async def chunks():
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    async with running_edge(report_settings) as (_app, client):
        declared = await client.post("/hooks/email/generic", content=big, headers=signed(big))
        streamed = await client.post("/hooks/email/generic", content=chunks(), headers=signed(big))
        postmark = await client.post("/hooks/email/postmark", content=big, auth=("pm", "pw-0123456789"),
                                     headers={"content-type": "application/json"})  # fmt: skip
        await assert_no_events(redis, report_settings)
    assert "content-length" not in streamed.request.headers  # chunked: the limit is enforced while reading
    assert [r.status_code for r in (declared, streamed, postmark)] == [413, 413, 413]


async def test_the_answer_does_not_wait_for_redis(report_settings, redis):
    # Redis unreachable: the report is accepted (spooled by the event buffer), not refused.
    down = report_settings.replace(redis_url="redis://127.0.0.1:1/0", redis_timeout_s=0.05)
    ref = mint_ref(down, Channel.EMAIL, 1, 2)
    body = example("generic_email.json", ref)
    async with running_edge(down) as (app, client):
        started = time.perf_counter()
        response = await client.post("/hooks/email/generic", content=body, headers=signed(body))
        elapsed = time.perf_counter() - started
        assert response.json()["recorded"] == 4
        app.state.events.flush()
    assert elapsed < 0.05
    assert app.state.events.spooled == 4


@pytest.mark.parametrize(
    ("setting", "value", "env"),
    [
        ("postmark_basic_auth", "no-colon-here", "TRACKER_REPORT_POSTMARK_BASIC_AUTH"),
        ("sendgrid_public_key", "bm90IGEga2V5", "TRACKER_REPORT_SENDGRID_PUBLIC_KEY"),
        ("sns_cert_url_pattern", "(unclosed", "TRACKER_REPORT_SNS_CERT_URL_PATTERN"),
    ],
)
def test_a_malformed_provider_setting_stops_start_up_naming_the_variable_not_the_value(settings, setting, value, env):
    broken = settings.replace(reports={"ses_topic_arns": "arn:aws:sns:us-east-1:1:t", setting: value})
    with pytest.raises(SettingsError) as caught:
        create_app(broken)
    assert env in str(caught.value)
    assert value not in str(caught.value)


def test_event_ids_are_deterministic_per_report_and_ordered_by_its_time():
    ts = parse_time_us("2024-05-31T16:08:37.5Z")

    def event_id(channel="email", provider="sendgrid", provider_id="evt-1", at=ts, kind="hard_bounce", recipient="1:2"):
        return report_event_id(channel, provider, provider_id, at, kind=kind, recipient=recipient)

    a = event_id()
    assert a == event_id()
    assert a != event_id(provider="mailgun")
    assert a != event_id(channel="sms")
    # Providers reuse their event ids across kinds and recipients (SendGrid's bounce and blocked samples).
    assert a != event_id(kind="soft_bounce")
    assert a != event_id(recipient="1:3")
    assert event_id(provider_id="evt-0", at=ts + 1000) > a  # the time comes first
    assert int.from_bytes(a[:6], "big") == ts // 1000


def test_stored_facts_are_short_strings():
    data = facts(provider="x", reason="r" * 10_000, code=550, empty="", missing=None)
    assert data == {"provider": "x", "reason": "r" * MAX_TEXT, "code": "550"}


async def test_a_redelivered_report_is_one_row_after_the_flusher(report_settings, redis, pg):
    [profile] = await make_profiles(pg, 1)
    message = await make_message(pg)
    ref = mint_ref(report_settings, Channel.EMAIL, message, profile)
    now_s = int(time.time()) - 5  # recent: the events land in a partition the flusher keeps
    body = json.dumps([
        {"type": "hard_bounce", "ref": ref, "provider_event_id": "mta-1", "timestamp": now_s, "code": "5.1.1"},
        {"type": "delivered", "ref": ref, "provider_event_id": "mta-2", "timestamp": now_s - 60},
    ]).encode()  # fmt: skip
    async with running_edge(report_settings) as (_app, client):
        for _attempt in range(3):
            assert (await client.post("/hooks/email/generic", content=body, headers=signed(body))).status_code == 200
        events = await wait_for_events(redis, report_settings, 6)
    assert len(events) == 6
    await drain(report_settings)
    assert sorted(await stored_ids(pg, [message])) == sorted({e.id for e in events})
    assert await pg.fetchval("select email_status from profiles where id = $1", profile) == "hard_bounced"

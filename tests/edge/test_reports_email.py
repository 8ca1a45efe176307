"""Email delivery reports: the generic format, SendGrid, Mailgun and Postmark, over HTTP into the streams.

(Amazon SES through SNS has its own file: test_reports_ses.py.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.rigs.edge_helpers import running_edge, wait_for_events
from tests.rigs.report_examples import assert_no_events, example, mint_ref
from tracker.contract.tokens import Channel

GENERIC_SECRET = "generic-email-secret-0123456789"
MAILGUN_KEY = "key-mailgun-signing-0123456789abcdef"
POSTMARK_AUTH = ("postmark", "pm-password-0123456789")
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
).decode()
MESSAGE, PROFILE = 4242, 77
JSON = {"content-type": "application/json"}


@pytest.fixture
def report_settings(settings):
    return settings.replace(reports={
        "generic_email_secret": GENERIC_SECRET,
        "sendgrid_public_key": SENDGRID_PUBLIC,
        "mailgun_signing_key": MAILGUN_KEY,
        "postmark_basic_auth": ":".join(POSTMARK_AUTH),
    })


@pytest.fixture
def ref(settings) -> str:
    return mint_ref(settings, Channel.EMAIL, MESSAGE, PROFILE)


def generic_headers(body: bytes, secret: str = GENERIC_SECRET, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"x-tracker-timestamp": stamp, "x-tracker-signature": "sha256=" + mac, "content-type": "application/json"}


def sendgrid_headers(body: bytes, key: ec.EllipticCurvePrivateKey = SENDGRID_KEY) -> dict[str, str]:
    stamp = str(int(time.time()))
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
        "x-twilio-email-event-webhook-timestamp": stamp,
        "content-type": "application/json",
    }


def mailgun_signed(name: str, ref: str, key: str = MAILGUN_KEY) -> bytes:
    """The example with a fresh `signature` object, as Mailgun makes one for each request."""
    payload = json.loads(example(name, ref))
    stamp, token = str(int(time.time())), secrets.token_hex(25)  # a new token each time: each is accepted once
    digest = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    payload["signature"] = {"timestamp": stamp, "token": token, "signature": digest}
    return json.dumps(payload).encode()


# -- generic ---------------------------------------------------------------------------------------


async def test_generic_reports_become_events_and_a_report_without_a_valid_ref_is_skipped(report_settings, redis, ref):
    body = example("generic_email.json", ref)
    async with running_edge(report_settings) as (_app, client):
        response = await client.post("/reports/email/generic", content=body, headers=generic_headers(body))
        events = await wait_for_events(redis, report_settings, 4)
    assert response.status_code == 200
    assert response.json() == {"recorded": 4, "bad_ref": 1, "untracked": 0}
    by_kind = {e.kind: e for e in events}
    assert sorted(by_kind) == ["complained", "delivered", "hard_bounce", "soft_bounce"]
    assert {(e.channel, e.message_id, e.profile_id) for e in events} == {("email", MESSAGE, PROFILE)}
    bounce = by_kind["hard_bounce"]
    assert bounce.data == {"provider": "generic", "reason": "550 5.1.1 <jane@example.com>: mailbox unknown",
                           "code": "5.1.1"}  # fmt: skip
    assert bounce.ts_us == 1717171717 * 1_000_000  # the provider's time, not ours
    assert by_kind["soft_bounce"].ts_us == 1717164600_250000  # 16:10:00.250+02:00
    assert (bounce.link_index, bounce.ua_class, bounce.ip_prefix) == (-1, "", "")


async def test_generic_bad_signature_stale_timestamp_or_no_signature_get_401_and_record_nothing(
    report_settings, redis, ref
):
    body = example("generic_email.json", ref)
    async with running_edge(report_settings) as (_app, client):
        forged = await client.post(
            "/reports/email/generic", content=body, headers=generic_headers(body, "wrong-secret")
        )
        stale = await client.post(
            "/reports/email/generic", content=body, headers=generic_headers(body, timestamp=int(time.time()) - 3600)
        )
        unsigned = await client.post("/reports/email/generic", content=body)
        tampered = await client.post(
            "/reports/email/generic", content=body.replace(b"5.1.1", b"5.1.2"), headers=generic_headers(body)
        )
        await assert_no_events(redis, report_settings)
    assert [r.status_code for r in (forged, stale, unsigned, tampered)] == [401, 401, 401, 401]


async def test_generic_malformed_body_or_unknown_type_gets_400_and_records_nothing(report_settings, redis, ref):
    async with running_edge(report_settings) as (_app, client):
        for body in (b"{not json", json.dumps([{"type": "exploded", "ref": ref, "provider_event_id": "x",
                                                   "timestamp": 1717171717}]).encode()):  # fmt: skip
            response = await client.post("/reports/email/generic", content=body, headers=generic_headers(body))
            assert response.status_code == 400, body
        await assert_no_events(redis, report_settings)


async def test_a_ref_for_another_channel_or_another_token_kind_is_not_a_ref(report_settings, redis, settings):
    from tracker.contract.tokens import TokenKind, mint

    sms_ref = mint_ref(settings, Channel.SMS, MESSAGE, PROFILE)
    open_token = mint(settings.signing_keys, 1, TokenKind.OPEN, Channel.EMAIL, MESSAGE, PROFILE)
    body = json.dumps([
        {"type": "delivered", "ref": sms_ref, "provider_event_id": "a", "timestamp": 1717171717},
        {"type": "delivered", "ref": open_token, "provider_event_id": "b", "timestamp": 1717171717},
    ]).encode()  # fmt: skip
    async with running_edge(report_settings) as (_app, client):
        response = await client.post("/reports/email/generic", content=body, headers=generic_headers(body))
        await assert_no_events(redis, report_settings)
    assert response.json() == {"recorded": 0, "bad_ref": 2, "untracked": 0}


# -- SendGrid --------------------------------------------------------------------------------------


async def test_sendgrid_batch_maps_every_event_type(report_settings, redis, ref):
    body = example("sendgrid_events.json", ref)
    async with running_edge(report_settings) as (_app, client):
        response = await client.post("/reports/email/sendgrid", content=body, headers=sendgrid_headers(body))
        events = await wait_for_events(redis, report_settings, 8)
    assert response.status_code == 200
    # processed is not tracked; the last delivered event carries no tracker_ref.
    assert response.json() == {"recorded": 8, "bad_ref": 1, "untracked": 1}
    kinds = sorted(e.kind for e in events)
    assert kinds == sorted(["delivered", "hard_bounce", "soft_bounce", "undelivered", "opened", "clicked",
                            "complained", "unsubscribed"])  # fmt: skip
    assert {(e.channel, e.message_id, e.profile_id) for e in events} == {("email", MESSAGE, PROFILE)}
    by_kind = {e.kind: e for e in events}
    assert by_kind["hard_bounce"].data == {
        "provider": "sendgrid",
        "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
        "code": "5.1.1",
        "classification": "Invalid Address",
    }
    assert by_kind["soft_bounce"].data["code"] == "4.7.0"  # a "blocked" bounce is temporary
    assert by_kind["clicked"].data["url"] == "https://shop.example.com/sale"
    assert by_kind["delivered"].ts_us == 1717171717 * 1_000_000


async def test_sendgrid_signature_by_another_key_gets_401(report_settings, redis, ref):
    body = example("sendgrid_events.json", ref)
    other = ec.generate_private_key(ec.SECP256R1())
    async with running_edge(report_settings) as (_app, client):
        forged = await client.post("/reports/email/sendgrid", content=body, headers=sendgrid_headers(body, other))
        headers = sendgrid_headers(body)
        headers["x-twilio-email-event-webhook-timestamp"] = str(int(time.time()) + 1)  # not what was signed
        moved = await client.post("/reports/email/sendgrid", content=body, headers=headers)
        await assert_no_events(redis, report_settings)
    assert (forged.status_code, moved.status_code) == (401, 401)


# -- Mailgun ---------------------------------------------------------------------------------------


async def test_mailgun_failed_complained_and_refs_from_variables_or_headers(report_settings, redis, ref):
    async with running_edge(report_settings) as (_app, client):
        for name in ("mailgun_failed_permanent.json", "mailgun_failed_temporary.json", "mailgun_complained.json"):
            response = await client.post("/reports/email/mailgun", content=mailgun_signed(name, ref), headers=JSON)
            assert response.status_code == 200 and response.json()["recorded"] == 1, name
        events = await wait_for_events(redis, report_settings, 3)
    by_kind = {e.kind: e for e in events}
    assert sorted(by_kind) == ["complained", "hard_bounce", "soft_bounce"]
    assert {(e.channel, e.message_id, e.profile_id) for e in events} == {("email", MESSAGE, PROFILE)}
    assert by_kind["hard_bounce"].data == {
        "provider": "mailgun",
        "reason": "bounce",
        "code": "550",
        "description": "550 5.1.1 The email account that you tried to reach does not exist.",
    }
    assert by_kind["hard_bounce"].ts_us == 1717171717_375624
    assert by_kind["soft_bounce"].data["code"] == "452"  # its ref came from message.headers


async def test_mailgun_documented_signature_example_does_not_verify_with_our_key(report_settings, redis, ref):
    async with running_edge(report_settings) as (_app, client):
        as_documented = await client.post(
            "/reports/email/mailgun", content=example("mailgun_failed_permanent.json", ref), headers=JSON
        )
        wrong_key = await client.post(
            "/reports/email/mailgun", content=mailgun_signed("mailgun_complained.json", ref, key="another-key"),
            headers=JSON,
        )
        not_json = await client.post("/reports/email/mailgun", content=b"event=failed", headers=JSON)
        await assert_no_events(redis, report_settings)
    assert [r.status_code for r in (as_documented, wrong_key, not_json)] == [401, 401, 401]


# -- Postmark --------------------------------------------------------------------------------------


async def test_postmark_records_map_by_record_type_and_bounce_type(report_settings, redis, ref):
    names = ["postmark_bounce.json", "postmark_soft_bounce.json", "postmark_spam_complaint.json",
             "postmark_delivery.json"]  # fmt: skip
    async with running_edge(report_settings) as (_app, client):
        for name in names:
            response = await client.post("/reports/email/postmark", content=example(name, ref), auth=POSTMARK_AUTH,
                                         headers=JSON)  # fmt: skip
            assert response.status_code == 200 and response.json()["recorded"] == 1, name
        events = await wait_for_events(redis, report_settings, 4)
    by_kind = {e.kind: e for e in events}
    assert sorted(by_kind) == ["complained", "delivered", "hard_bounce", "soft_bounce"]
    assert {(e.channel, e.message_id, e.profile_id) for e in events} == {("email", MESSAGE, PROFILE)}
    assert by_kind["hard_bounce"].data == {
        "provider": "postmark",
        "reason": "HardBounce",
        "code": "1",
        "description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
    }
    assert by_kind["hard_bounce"].ts_us == 1717171717_907025  # 7 fractional digits, cut to microseconds


async def test_postmark_wrong_or_missing_basic_auth_gets_401(report_settings, redis, ref):
    body = example("postmark_bounce.json", ref)
    async with running_edge(report_settings) as (_app, client):
        wrong = await client.post("/reports/email/postmark", content=body, auth=("postmark", "guess"), headers=JSON)
        missing = await client.post("/reports/email/postmark", content=body, headers=JSON)
        await assert_no_events(redis, report_settings)
    assert (wrong.status_code, missing.status_code) == (401, 401)


# -- every provider: redeliveries ------------------------------------------------------------------


async def test_a_redelivered_report_gets_the_same_event_id_and_time(report_settings, redis, ref):
    generic = example("generic_email.json", ref)
    sendgrid = example("sendgrid_events.json", ref)
    postmark = example("postmark_bounce.json", ref)
    async with running_edge(report_settings) as (_app, client):
        for _attempt in range(2):  # each attempt signed afresh, as the providers do
            await client.post("/reports/email/generic", content=generic, headers=generic_headers(generic))
            await client.post("/reports/email/sendgrid", content=sendgrid, headers=sendgrid_headers(sendgrid))
            await client.post("/reports/email/mailgun", content=mailgun_signed("mailgun_complained.json", ref),
                              headers=JSON)  # fmt: skip
            await client.post("/reports/email/postmark", content=postmark, auth=POSTMARK_AUTH, headers=JSON)
        events = await wait_for_events(redis, report_settings, 2 * (4 + 8 + 1 + 1))
    assert len(events) == 28
    ids = [(e.id, e.ts_us) for e in events]
    assert len(set(ids)) == 14  # every event twice, with the same (id, ts): the flusher keeps one
    for event_id, ts_us in set(ids):
        assert len(event_id) == 16 and event_id[6] >> 4 == 7 and event_id[8] >> 6 == 0b10  # UUIDv7 layout
        assert int.from_bytes(event_id[:6], "big") == ts_us // 1000  # time-ordered by the provider's time

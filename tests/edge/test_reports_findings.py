"""The outside security run's findings on provider reports, each reproduced against the edge app.

Mailgun replays, 5xx on bad input, a non-finite signed timestamp, reports that collapsed into
one event id, provider events that were dropped, and bodies of the wrong Content-Type.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator

import pytest

from tests.edge.test_reports_email import (
    GENERIC_SECRET,
    MAILGUN_KEY,
    POSTMARK_AUTH,
    SENDGRID_PUBLIC,
    generic_headers,
    mailgun_signed,
    sendgrid_headers,
)
from tests.edge.test_reports_ses import LOCAL, TOPIC, FakeSns, notification, post
from tests.rigs.edge_helpers import running_edge, wait_for_events
from tests.rigs.report_examples import assert_no_events, example, mint_ref
from tracker.contract.tokens import Channel

MESSAGE, PROFILE, OTHER_PROFILE = 6060, 12, 13
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def sns() -> Iterator[FakeSns]:
    fake = FakeSns()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


@pytest.fixture
def report_settings(settings):
    return settings.replace(reports={
        "generic_email_secret": GENERIC_SECRET,
        "sendgrid_public_key": SENDGRID_PUBLIC,
        "mailgun_signing_key": MAILGUN_KEY,
        "postmark_basic_auth": ":".join(POSTMARK_AUTH),
        "ses_topic_arns": TOPIC,
        "sns_cert_url_pattern": LOCAL + r"[^?#@]+\.pem$",
    })  # fmt: skip


@pytest.fixture
def ref(settings) -> str:
    return mint_ref(settings, Channel.EMAIL, MESSAGE, PROFILE)


# -- 2. Mailgun replay -----------------------------------------------------------------------------


async def test_a_mailgun_signature_block_used_again_with_another_body_gets_401(report_settings, redis, ref):
    first = mailgun_signed("mailgun_complained.json", ref)
    replayed = json.loads(example("mailgun_failed_permanent.json", ref))
    replayed["signature"] = json.loads(first)["signature"]  # captured from the first request
    async with running_edge(report_settings) as (_app, client):
        accepted = await client.post("/reports/email/mailgun", content=first, headers=JSON)
        replay = await client.post("/reports/email/mailgun", content=json.dumps(replayed).encode(), headers=JSON)
        again = await client.post("/reports/email/mailgun", content=first, headers=JSON)
        events = await wait_for_events(redis, report_settings, 1)
    assert accepted.status_code == 200
    assert (replay.status_code, again.status_code) == (401, 401)
    assert [e.kind for e in events] == ["complained"]


async def test_mailgun_refuses_with_503_while_its_used_tokens_cannot_be_checked(report_settings, redis, ref):
    down = report_settings.replace(redis_url="redis://127.0.0.1:1/0", redis_timeout_s=0.05)
    async with running_edge(down) as (_app, client):
        response = await client.post("/reports/email/mailgun", content=mailgun_signed("mailgun_complained.json", ref),
                                     headers=JSON)  # fmt: skip
    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()


# -- 3. 5xx on bad input ---------------------------------------------------------------------------


async def test_an_unsigned_ses_message_with_a_list_for_topic_arn_gets_a_4xx(report_settings, redis):
    body = json.dumps({"Type": "Notification", "TopicArn": ["x"]}).encode()
    async with running_edge(report_settings) as (_app, client):
        response = await post(client, body)
        await assert_no_events(redis, report_settings)
    assert response.status_code == 401


@pytest.mark.parametrize("recipients", [{"emailAddress": "jane@example.com"}, 5, "jane@example.com"])
async def test_an_ses_bounce_whose_recipients_are_not_a_list_is_still_a_bounce(report_settings, sns, redis, ref,
                                                                                recipients):  # fmt: skip
    message = json.loads(example("ses_bounce_permanent.json", ref))
    message["bounce"]["bouncedRecipients"] = recipients
    envelope = notification("ses_bounce_permanent.json", ref, f"odd-{type(recipients).__name__}")
    envelope["Message"] = json.dumps(message)
    async with running_edge(report_settings) as (_app, client):
        response = await post(client, sns.sign(envelope))
        [event] = await wait_for_events(redis, report_settings, 1)
    assert response.status_code == 200
    assert event.kind == "hard_bounce" and "code" not in event.data


@pytest.mark.parametrize("when", ["2024-13-01T10:00:00Z", "2024-02-30T10:00:00Z", "2024-05-31T10:00:00+99:00"])
async def test_provider_times_that_look_iso_but_are_not_dates_get_400(report_settings, redis, ref, when):
    postmark = json.loads(example("postmark_delivery.json", ref))
    postmark["DeliveredAt"] = when
    mailgun = json.loads(mailgun_signed("mailgun_complained.json", ref))
    mailgun["event-data"]["timestamp"] = when
    async with running_edge(report_settings) as (_app, client):
        pm = await client.post("/reports/email/postmark", content=json.dumps(postmark).encode(), auth=POSTMARK_AUTH,
                               headers=JSON)  # fmt: skip
        mg = await client.post("/reports/email/mailgun", content=json.dumps(mailgun).encode(), headers=JSON)
        await assert_no_events(redis, report_settings)
    assert (pm.status_code, mg.status_code) == (400, 400)


# -- 4. non-finite signed timestamps ---------------------------------------------------------------


@pytest.mark.parametrize("stamp", ["nan", "NaN", "inf", "-inf", "1e400", "9" * 400, "1_717_171_717", " 1717171717"])
async def test_a_validly_signed_generic_report_with_a_nonsense_timestamp_gets_401(report_settings, redis, ref, stamp):
    body = example("generic_email.json", ref)
    headers = generic_headers(body)
    headers.update(generic_headers(body, timestamp=stamp))  # type: ignore[arg-type]  # signed over that text
    async with running_edge(report_settings) as (_app, client):
        response = await client.post("/reports/email/generic", content=body, headers=headers)
        await assert_no_events(redis, report_settings)
    assert response.status_code == 401


# -- 5. reports real senders produce ---------------------------------------------------------------


async def test_sendgrid_bounce_and_blocked_sharing_an_event_id_stay_two_events(report_settings, redis, settings, ref):
    other = mint_ref(settings, Channel.EMAIL, MESSAGE, OTHER_PROFILE)
    now = int(time.time())
    shared = "sg-shared-0001"  # as in SendGrid's documented samples: one sg_event_id for both
    body = json.dumps([
        {"email": "a@example.com", "timestamp": now, "event": "bounce", "type": "bounce", "sg_event_id": shared,
         "tracker_ref": ref},
        {"email": "b@example.com", "timestamp": now, "event": "bounce", "type": "blocked", "sg_event_id": shared,
         "tracker_ref": other},
        {"email": "a@example.com", "timestamp": now, "event": "delivered", "sg_event_id": shared, "tracker_ref": ref},
    ]).encode()  # fmt: skip
    async with running_edge(report_settings) as (_app, client):
        for _attempt in range(2):  # a redelivery keeps its ids
            response = await client.post("/reports/email/sendgrid", content=body, headers=sendgrid_headers(body))
            assert response.json()["recorded"] == 3
        events = await wait_for_events(redis, report_settings, 6)
    assert len({e.id for e in events}) == 3
    assert sorted({(e.kind, e.profile_id) for e in events}) == sorted(
        [("hard_bounce", PROFILE), ("soft_bounce", OTHER_PROFILE), ("delivered", PROFILE)]
    )


async def test_sendgrid_deferred_is_recorded_as_deferred(report_settings, redis, ref):
    body = json.dumps([{"email": "a@example.com", "timestamp": int(time.time()), "event": "deferred",
                        "sg_event_id": "sg-def-1", "attempt": "2", "tracker_ref": ref,
                        "response": "400 try again later"}]).encode()  # fmt: skip
    async with running_edge(report_settings) as (_app, client):
        response = await client.post("/reports/email/sendgrid", content=body, headers=sendgrid_headers(body))
        [event] = await wait_for_events(redis, report_settings, 1)
    assert response.json() == {"recorded": 1, "bad_ref": 0, "untracked": 0}
    assert event.kind == "deferred" and event.data["reason"] == "400 try again later"


async def test_a_mailgun_event_without_an_id_gets_a_stable_id_from_its_body(report_settings, redis, ref):
    payloads = []
    for _attempt in range(2):  # each redelivery signed afresh, the event the same
        payload = json.loads(mailgun_signed("mailgun_complained.json", ref))
        payload["signature"]["token"] = f"token-{_attempt}-" + "0" * 40
        del payload["event-data"]["id"]
        payloads.append(payload)
    for payload in payloads:
        sig = payload["signature"]
        sig["signature"] = hmac.new(MAILGUN_KEY.encode(), (sig["timestamp"] + sig["token"]).encode(),
                                    hashlib.sha256).hexdigest()  # fmt: skip
    async with running_edge(report_settings) as (_app, client):
        responses = [await client.post("/reports/email/mailgun", content=json.dumps(p).encode(), headers=JSON)
                     for p in payloads]  # fmt: skip
        events = await wait_for_events(redis, report_settings, 2)
    assert [r.status_code for r in responses] == [200, 200]
    assert len(events) == 2 and events[0].id == events[1].id


@pytest.mark.parametrize(
    ("reason", "kind"),
    [("HardBounce", "hard_bounce"), ("SpamComplaint", "complained"), ("ManualSuppression", "unsubscribed")],
)
async def test_postmark_subscription_changes_that_suppress_sending_are_recorded(report_settings, redis, ref, reason,
                                                                                kind):  # fmt: skip
    record = {"RecordType": "SubscriptionChange", "MessageID": "a4909a96-73d8-4c4f-8d4b-3d1e4f5a6b7c",
              "ServerID": 23, "MessageStream": "outbound", "ChangedAt": "2024-05-31T16:08:40.416071Z",
              "Recipient": "jane@example.com", "Origin": "Recipient", "SuppressSending": True,
              "SuppressionReason": reason, "Tag": "", "Metadata": {"tracker_ref": ref}}  # fmt: skip
    async with running_edge(report_settings) as (_app, client):
        response = await client.post("/reports/email/postmark", content=json.dumps(record).encode(),
                                     auth=POSTMARK_AUTH, headers=JSON)  # fmt: skip
        [event] = await wait_for_events(redis, report_settings, 1)
    assert response.json() == {"recorded": 1, "bad_ref": 0, "untracked": 0}
    assert event.kind == kind and event.data["reason"] == reason


async def test_a_body_of_another_content_type_gets_415(report_settings, redis, ref):
    generic = example("generic_email.json", ref)
    sendgrid = example("sendgrid_events.json", ref)
    as_form = {"content-type": "application/x-www-form-urlencoded"}
    async with running_edge(report_settings) as (_app, client):
        responses = [
            await client.post("/reports/email/generic", content=generic,
                              headers={**generic_headers(generic), **as_form}),
            await client.post("/reports/email/sendgrid", content=sendgrid,
                              headers={**sendgrid_headers(sendgrid), "content-type": "text/plain"}),
            await client.post("/reports/email/mailgun", content=mailgun_signed("mailgun_complained.json", ref),
                              headers=as_form),
            await client.post("/reports/email/postmark", content=example("postmark_delivery.json", ref),
                              auth=POSTMARK_AUTH),  # no Content-Type at all
            await client.post("/reports/email/ses", content=b"{}", headers={"content-type": "application/xml"}),
        ]  # fmt: skip
        await assert_no_events(redis, report_settings)
    assert [r.status_code for r in responses] == [415] * 5

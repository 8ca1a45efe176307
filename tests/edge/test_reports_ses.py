"""Amazon SES through SNS: signatures v1 and v2, the subscription handshake, certificate URLs.

A real local HTTP server plays the part of SNS: it serves a self-signed certificate
whose key signs the messages exactly as SNS does, and records the SubscribeURL
fetch. Settings allow that local server's URLs instead of `sns.<region>.amazonaws.com`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.rigs.edge_helpers import running_edge, wait_for_events
from tests.rigs.report_examples import assert_no_events, example, mint_ref
from tracker.contract.tokens import Channel

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-notifications"
MESSAGE, PROFILE = 5150, 31
LOCAL = r"^http://127\.0\.0\.1:\d+/"


def self_signed(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.us-east-1.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM)


class FakeSns:
    """What SNS serves over HTTP: the signing certificate, and the SubscribeURL that confirms."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pem = self_signed(self.key)
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append(self.path)
                if self.path == "/SimpleNotificationService-test.pem":
                    body, status = fake.pem, 200
                elif self.path.startswith("/confirm?"):
                    body, status = b"<ConfirmSubscriptionResponse/>", 200
                else:
                    body, status = b"not found", 404
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.cert_url = self.base + "/SimpleNotificationService-test.pem"

    def sign(self, message: dict[str, Any], version: str = "1", key: rsa.RSAPrivateKey | None = None) -> bytes:
        """The SNS envelope with its Signature: `name\\nvalue\\n` over the signed fields, in order."""
        message = {**message, "SignatureVersion": version, "SigningCertURL": self.cert_url}
        if message["Type"] == "Notification":
            names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        else:
            names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
        text = "".join(f"{name}\n{message[name]}\n" for name in names if name in message)
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = (key or self.key).sign(text.encode(), padding.PKCS1v15(), digest)
        message["Signature"] = base64.b64encode(signature).decode()
        return json.dumps(message).encode()


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
def report_settings(settings, sns):
    sns.requests.clear()
    return settings.replace(reports={
        "ses_topic_arns": f"arn:aws:sns:eu-west-1:123456789012:other, {TOPIC}",
        "sns_cert_url_pattern": LOCAL + r"[^?#@]+\.pem$",
        "sns_subscribe_url_pattern": LOCAL + r"confirm\?",
    })


@pytest.fixture
def ref(settings) -> str:
    return mint_ref(settings, Channel.EMAIL, MESSAGE, PROFILE)


def notification(name: str, ref: str, message_id: str, topic: str = TOPIC) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": topic,
        "Message": example(name, ref).decode(),
        "Timestamp": "2024-05-31T16:08:38.123Z",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
    }


def subscription(sns: FakeSns, topic: str = TOPIC, path: str = "/confirm") -> dict[str, Any]:
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb7",
        "TopicArn": topic,
        "Message": f"You have chosen to subscribe to the topic {topic}.\nTo confirm the subscription, visit the SubscribeURL included in this message.",  # noqa: E501
        "SubscribeURL": f"{sns.base}{path}?Action=ConfirmSubscription&TopicArn={topic}&Token=2336412f37fb",
        "Timestamp": "2024-05-31T16:00:00.000Z",
    }


async def post(client, body: bytes, kind: str = "Notification"):
    return await client.post(
        "/reports/email/ses", content=body,
        headers={"x-amz-sns-message-type": kind, "content-type": "text/plain; charset=UTF-8"},
    )  # fmt: skip


async def test_the_subscription_confirmation_is_answered_by_fetching_the_subscribe_url(report_settings, sns, redis):
    async with running_edge(report_settings) as (_app, client):
        response = await post(client, sns.sign(subscription(sns)), "SubscriptionConfirmation")
        await assert_no_events(redis, report_settings)
    assert response.status_code == 200
    assert [r for r in sns.requests if r.startswith("/confirm")] == [
        f"/confirm?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=2336412f37fb"
    ]


async def test_no_subscription_is_confirmed_for_another_topic_an_odd_url_or_a_bad_signature(report_settings, sns):
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    async with running_edge(report_settings) as (_app, client):
        foreign = await post(client, sns.sign(subscription(sns, topic="arn:aws:sns:us-east-1:666:evil")))
        elsewhere = await post(client, sns.sign(subscription(sns, path="/elsewhere")))
        forged = await post(client, sns.sign(subscription(sns), key=other_key))
    assert [r.status_code for r in (foreign, elsewhere, forged)] == [401, 401, 401]
    assert not [r for r in sns.requests if not r.endswith(".pem")]


@pytest.mark.parametrize("version", ["1", "2"])
async def test_signed_notifications_become_events(report_settings, sns, redis, ref, version):
    names = ["ses_bounce_permanent.json", "ses_bounce_transient.json", "ses_complaint.json", "ses_delivery.json",
             "ses_send.json"]  # fmt: skip
    async with running_edge(report_settings) as (_app, client):
        outcomes = []
        for n, name in enumerate(names):
            response = await post(client, sns.sign(notification(name, ref, f"msg-{version}-{n}"), version))
            assert response.status_code == 200, response.text
            outcomes.append(response.json())
        events = await wait_for_events(redis, report_settings, 4)
    assert outcomes[-1] == {"recorded": 0, "bad_ref": 0, "untracked": 1}  # a Send event is not tracked
    by_kind = {e.kind: e for e in events}
    assert sorted(by_kind) == ["complained", "delivered", "hard_bounce", "soft_bounce"]
    assert {(e.channel, e.message_id, e.profile_id) for e in events} == {("email", MESSAGE, PROFILE)}
    assert by_kind["hard_bounce"].data == {
        "provider": "ses", "reason": "Permanent/General", "code": "5.1.1",
        "diagnostic": "smtp; 550 5.1.1 user unknown",
    }  # fmt: skip
    assert by_kind["hard_bounce"].ts_us == 1717171717_512000
    assert by_kind["soft_bounce"].data["reason"] == "Transient/MailboxFull"
    assert by_kind["complained"].data == {"provider": "ses", "reason": "abuse"}  # its ref came from a message tag
    assert by_kind["delivered"].data["smtp"] == "250 2.6.0 Message received"
    assert [r for r in sns.requests if r.endswith(".pem")] == ["/SimpleNotificationService-test.pem"]  # cached


async def test_a_tampered_or_foreign_notification_gets_401_and_no_event(report_settings, sns, redis, ref):
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    signed = json.loads(sns.sign(notification("ses_bounce_permanent.json", ref, "m-1")))
    signed["Message"] = signed["Message"].replace("Permanent", "Transient")
    async with running_edge(report_settings) as (_app, client):
        tampered = await post(client, json.dumps(signed).encode())
        wrong_key = await post(client, sns.sign(notification("ses_delivery.json", ref, "m-2"), "2", other_key))
        foreign_topic = await post(
            client, sns.sign(notification("ses_delivery.json", ref, "m-3", topic="arn:aws:sns:us-east-1:666:evil"))
        )
        unsigned = await post(client, json.dumps(notification("ses_delivery.json", ref, "m-4")).encode())
        not_sns = await post(client, b"{}")
        await assert_no_events(redis, report_settings)
    assert [r.status_code for r in (tampered, wrong_key, foreign_topic, unsigned)] == [401, 401, 401, 401]
    assert not_sns.status_code == 400


async def test_only_certificates_from_sns_hosts_are_fetched_by_default(settings, sns, redis, ref):
    defaults = settings.replace(reports={"ses_topic_arns": TOPIC})  # the default pattern: https://sns.<region>.amazonaws.com
    sns.requests.clear()
    async with running_edge(defaults) as (_app, client):
        response = await post(client, sns.sign(notification("ses_delivery.json", ref, "m-5")))
        await assert_no_events(redis, defaults)
    assert response.status_code == 401
    assert sns.requests == []


async def test_an_sns_retry_of_the_same_message_gets_the_same_event_id(report_settings, sns, redis, ref):
    body = sns.sign(notification("ses_bounce_permanent.json", ref, "b0b1a2d3-retry"), "2")
    async with running_edge(report_settings) as (_app, client):
        for _attempt in range(2):
            assert (await post(client, body)).status_code == 200
        first, second = await wait_for_events(redis, report_settings, 2)
    assert (first.id, first.ts_us) == (second.id, second.ts_us)

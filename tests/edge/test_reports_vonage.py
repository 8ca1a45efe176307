"""Vonage Messages API SMS status webhooks: the signed JWT (HS256, iat, payload_hash), statuses, the ref."""

from __future__ import annotations

import hashlib
import time
from urllib.parse import quote

import pytest

from edge.reports.vonage import sign_jwt
from tests.rigs.edge_helpers import running_edge, wait_for_events
from tests.rigs.report_examples import assert_no_events, example, mint_ref
from tracker.contract.tokens import Channel

SECRET = "vonage-signature-secret-0123456789abcdef"
MESSAGE, PROFILE = 7070, 99


@pytest.fixture
def report_settings(settings):
    return settings.replace(reports={"vonage_signature_secret": SECRET})


@pytest.fixture
def ref(settings) -> str:
    return mint_ref(settings, Channel.SMS, MESSAGE, PROFILE)


def signed(body: bytes, secret: str = SECRET, iat: float | None = None, payload_hash: str | None = None,
           algorithm: str = "HS256") -> dict[str, str]:  # fmt: skip
    """The headers Vonage puts on a status webhook."""
    claims = {"iat": int(time.time()) if iat is None else iat, "jti": "c5ba8f24-1a14-4c10-bfdf-3fbe8ce511b5",
              "iss": "Vonage", "payload_hash": payload_hash or hashlib.sha256(body).hexdigest(),
              "api_key": "a1b2c3d4", "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"}  # fmt: skip
    return {"authorization": "Bearer " + sign_jwt(secret, claims, algorithm), "content-type": "application/json"}


async def test_vonage_statuses_map_to_delivered_and_undelivered(report_settings, redis, ref):
    async with running_edge(report_settings) as (_app, client):
        answers = []
        for name in ("vonage_submitted.json", "vonage_delivered.json", "vonage_rejected.json"):
            body = example(name, ref)
            answers.append((await client.post("/reports/sms/vonage", content=body, headers=signed(body))).json())
        events = await wait_for_events(redis, report_settings, 2)
    assert answers == [{"recorded": 0, "bad_ref": 0, "untracked": 1}, {"recorded": 1, "bad_ref": 0, "untracked": 0},
                       {"recorded": 1, "bad_ref": 0, "untracked": 0}]  # fmt: skip
    by_kind = {e.kind: e for e in events}
    assert {(e.channel, e.message_id, e.profile_id) for e in events} == {("sms", MESSAGE, PROFILE)}
    assert by_kind["undelivered"].data == {"provider": "vonage", "status": "rejected", "code": "1320",
                                           "reason": "Message failed because the number is not reachable"}
    assert by_kind["delivered"].data == {"provider": "vonage", "status": "delivered", "network": "23410"}
    assert by_kind["delivered"].ts_us == 1717171717 * 1_000_000


async def test_the_ref_can_travel_in_the_status_url_instead(report_settings, redis, ref):
    body = example("vonage_delivered.json", "")
    async with running_edge(report_settings) as (_app, client):
        response = await client.post(f"/reports/sms/vonage?tracker_ref={quote(ref)}", content=body,
                                     headers=signed(body))  # fmt: skip
        [event] = await wait_for_events(redis, report_settings, 1)
    assert response.json()["recorded"] == 1 and event.profile_id == PROFILE


async def test_unsigned_forged_stale_or_moved_tokens_get_401(report_settings, redis, ref):
    body = example("vonage_delivered.json", ref)
    other = example("vonage_rejected.json", ref)
    cases = {
        "unsigned": {"content-type": "application/json"},
        "other secret": signed(body, secret="not-the-secret-0123456789"),
        "stale": signed(body, iat=time.time() - 3600),
        "no iat": signed(body, iat=float("nan")),
        "another body's hash": signed(body, payload_hash=hashlib.sha256(other).hexdigest()),
        "alg none": {**signed(body), "authorization": "Bearer " + ".".join(
            signed(body, algorithm="none")["authorization"][7:].split(".")[:2]) + "."},
        "HS512 label": signed(body, algorithm="HS512"),
        "garbage": {"authorization": "Bearer a.b.c!", "content-type": "application/json"},
    }
    async with running_edge(report_settings) as (_app, client):
        statuses = {name: (await client.post("/reports/sms/vonage", content=body, headers=headers)).status_code
                    for name, headers in cases.items()}  # fmt: skip
        await assert_no_events(redis, report_settings)
    assert statuses == dict.fromkeys(cases, 401)


async def test_a_redelivered_vonage_status_gets_the_same_event_id(report_settings, redis, ref):
    body = example("vonage_rejected.json", ref)
    async with running_edge(report_settings) as (_app, client):
        for _attempt in range(2):
            assert (await client.post("/reports/sms/vonage", content=body, headers=signed(body))).status_code == 200
        first, second = await wait_for_events(redis, report_settings, 2)
    assert (first.id, first.ts_us) == (second.id, second.ts_us)

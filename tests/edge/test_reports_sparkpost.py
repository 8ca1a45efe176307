"""SparkPost event webhooks: basic auth or the webhook token, batches of `msys` events, bounce classes."""

from __future__ import annotations

import json

import pytest

from edge.app import create_app
from tests.rigs.edge_helpers import running_edge, wait_for_events
from tests.rigs.report_examples import assert_no_events, example, mint_ref
from tracker.config import SettingsError
from tracker.contract.tokens import Channel

AUTH = ("sparkpost", "sp-password-0123456789")
TOKEN = "5ebe2294ecd0e0f08eab7690d2a6ee69"
MESSAGE, PROFILE = 3131, 8
JSON = {"content-type": "application/json"}


@pytest.fixture
def report_settings(settings):
    return settings.replace(reports={"sparkpost_basic_auth": ":".join(AUTH)})


@pytest.fixture
def ref(settings) -> str:
    return mint_ref(settings, Channel.EMAIL, MESSAGE, PROFILE)


async def test_a_sparkpost_batch_maps_every_event_class(report_settings, redis, ref):
    body = example("sparkpost_events.json", ref)
    async with running_edge(report_settings) as (_app, client):
        response = await client.post("/reports/email/sparkpost", content=body, auth=AUTH, headers=JSON)
        events = await wait_for_events(redis, report_settings, 7)
    # injection and the test batch's empty entry are not tracked; the last delivery has no ref.
    assert response.json() == {"recorded": 7, "bad_ref": 1, "untracked": 2}
    by_kind = {e.kind: e for e in events}
    assert sorted(by_kind) == ["clicked", "complained", "deferred", "delivered", "hard_bounce", "soft_bounce",
                               "unsubscribed"]  # fmt: skip
    assert {(e.channel, e.message_id, e.profile_id) for e in events} == {("email", MESSAGE, PROFILE)}
    assert by_kind["hard_bounce"].data == {
        "provider": "sparkpost", "reason": "550 5.1.1 <jane@example.com>: Recipient address rejected: User unknown",
        "code": "550", "bounce_class": "10",
    }  # fmt: skip
    assert by_kind["soft_bounce"].data["bounce_class"] == "22"  # mailbox full: soft
    assert by_kind["clicked"].data["url"] == "https://shop.example.com/sale"
    assert by_kind["delivered"].ts_us == 1717171717 * 1_000_000


@pytest.mark.parametrize(("bounce_class", "kind"), [("30", "hard_bounce"), ("90", "hard_bounce"),
                                                    ("25", "undelivered"), ("50", "soft_bounce"),
                                                    ("1", "soft_bounce"), ("60", None)])  # fmt: skip
async def test_bounce_classes_follow_sparkposts_categories(report_settings, redis, ref, bounce_class, kind):
    body = json.dumps([{"msys": {"message_event": {
        "type": "out_of_band", "event_id": f"oob-{bounce_class}", "timestamp": "1717171717",
        "bounce_class": bounce_class, "rcpt_meta": {"tracker_ref": ref},
    }}}]).encode()  # fmt: skip
    async with running_edge(report_settings) as (_app, client):
        response = await client.post("/reports/email/sparkpost", content=body, auth=AUTH, headers=JSON)
        events = await wait_for_events(redis, report_settings, 1, timeout=0.3 if kind is None else 5.0)
    assert [e.kind for e in events] == ([kind] if kind else [])
    assert response.json()["untracked"] == (0 if kind else 1)


async def test_sparkpost_without_its_credentials_gets_401_before_its_body_is_read(report_settings, redis, ref):
    body = example("sparkpost_events.json", ref)
    both = report_settings.replace(reports={"sparkpost_basic_auth": ":".join(AUTH), "sparkpost_webhook_token": TOKEN})
    async with running_edge(both) as (_app, client):
        nothing = await client.post("/reports/email/sparkpost", content=body, headers=JSON)
        basic_only = await client.post("/reports/email/sparkpost", content=body, auth=AUTH, headers=JSON)
        wrong_token = await client.post("/reports/email/sparkpost", content=body, auth=AUTH,
                                        headers={**JSON, "x-messagesystems-webhook-token": TOKEN[:-1] + "0"})
        both_given = await client.post("/reports/email/sparkpost", content=body, auth=AUTH,
                                       headers={**JSON, "x-messagesystems-webhook-token": TOKEN})
        await wait_for_events(redis, both, 7)
    assert [r.status_code for r in (nothing, basic_only, wrong_token, both_given)] == [401, 401, 401, 200]


async def test_sparkpost_with_only_a_webhook_token(settings, redis, ref):
    token_only = settings.replace(reports={"sparkpost_webhook_token": TOKEN})
    body = example("sparkpost_events.json", ref)
    async with running_edge(token_only) as (_app, client):
        refused = await client.post("/reports/email/sparkpost", content=body, auth=AUTH, headers=JSON)
        accepted = await client.post("/reports/email/sparkpost", content=body,
                                     headers={**JSON, "x-messagesystems-webhook-token": TOKEN})
        await wait_for_events(redis, token_only, 7)
    assert (refused.status_code, accepted.status_code) == (401, 200)


async def test_a_sparkpost_body_that_is_not_a_batch_gets_400(report_settings, redis):
    async with running_edge(report_settings) as (_app, client):
        answers = [await client.post("/reports/email/sparkpost", content=body, auth=AUTH, headers=JSON)
                   for body in (b"{not json", b'{"msys": {}}', b'[1, 2]',
                                b'[{"msys": {"message_event": {"type": "delivery", "timestamp": "1717171717"}}}]')]
        await assert_no_events(redis, report_settings)
    assert [r.status_code for r in answers] == [400, 400, 400, 400]


def test_a_malformed_sparkpost_basic_auth_stops_start_up_naming_the_variable(settings):
    with pytest.raises(SettingsError, match="TRACKER_REPORT_SPARKPOST_BASIC_AUTH"):
        create_app(settings.replace(reports={"sparkpost_basic_auth": "no-colon"}))

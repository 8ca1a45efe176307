"""GET /resources/{id}/subscribers: who a send to a list may go to, a page at a time."""

from __future__ import annotations

import secrets

import pytest

from tests.rigs.api_helpers import Api, running_api


@pytest.fixture
async def api(settings) -> Api:
    async with running_api(settings) as api:
        yield api


async def a_list_with_members(api: Api, pg) -> tuple[int, dict[str, int]]:
    """An email list: four subscribed (one hard-bounced, one without an email), one pending, one gone."""
    resource = (await api.call("POST", "/resources", json={"name": "Weekly", "channel": "email"})).json()["id"]
    tag = secrets.token_hex(4)
    people: dict[str, int] = {}
    for name in ("ann", "bob", "bounced", "no_email", "pending", "gone"):
        body = {"external_id": f"{tag}-{name}"} if name == "no_email" else {"email": f"{name}-{tag}@example.com"}
        people[name] = (await api.call("POST", "/profiles", json=body)).json()["id"]
        base = f"/profiles/{people[name]}/subscriptions"
        await api.call("POST", base, json={"resource_id": resource, "double_opt_in": name == "pending"})
        if name == "gone":
            await api.call("DELETE", f"{base}/{resource}")
    await pg.execute("update profiles set email_status = 'hard_bounced' where id = $1", people["bounced"])
    return resource, people


async def test_pages_follow_profile_ids_and_sendable_keeps_working_addresses(api: Api, pg) -> None:
    resource, people = await a_list_with_members(api, pg)
    url = f"/resources/{resource}/subscribers"
    first = (await api.call("GET", f"{url}?limit=2")).json()
    second = (await api.call("GET", f"{url}?limit=2&after={first['next_after']}")).json()
    assert second["next_after"] is None
    subscribed = [s["profile_id"] for s in first["subscribers"] + second["subscribers"]]
    assert subscribed == sorted(people[n] for n in ("ann", "bob", "bounced", "no_email"))
    assert first["next_after"] == subscribed[1]
    ann = first["subscribers"][0]
    assert (ann["status"], ann["email_status"], ann["email"].startswith("ann-")) == ("subscribed", "active", True)
    assert ann["subscribed_at"] and ann["unsubscribed_at"] is None

    sendable = (await api.call("GET", f"{url}?sendable=true")).json()["subscribers"]
    assert [s["profile_id"] for s in sendable] == sorted([people["ann"], people["bob"]])
    pending = (await api.call("GET", f"{url}?status=pending")).json()["subscribers"]
    gone = (await api.call("GET", f"{url}?status=unsubscribed")).json()["subscribers"]
    assert [s["profile_id"] for s in pending] == [people["pending"]]
    assert [(s["profile_id"], bool(s["unsubscribed_at"])) for s in gone] == [(people["gone"], True)]


async def test_bad_queries_get_422_naming_the_parameter_and_an_unknown_list_404(api: Api, pg) -> None:
    resource = (await api.call("POST", "/resources", json={"name": "Empty", "channel": "sms"})).json()["id"]
    empty = (await api.call("GET", f"/resources/{resource}/subscribers?sendable=yes")).json()
    assert empty == {"subscribers": [], "next_after": None}
    for query, name in (("status=bogus", "status"), ("limit=0", "limit"), ("limit=1001", "limit"),
                        ("after=-1", "after"), ("sendable=maybe", "sendable")):  # fmt: skip
        response = await api.call("GET", f"/resources/{resource}/subscribers?{query}")
        assert response.status_code == 422 and response.json()["error"]["message"].startswith(name), query
    missing = await api.call("GET", "/resources/999999999/subscribers")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    refused = await api.client.get(f"/api/v1/resources/{resource}/subscribers")
    assert refused.status_code == 401

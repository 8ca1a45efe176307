"""The /api/v1 endpoints: success and failure paths, auth, and responses that match the OpenAPI schema."""

from __future__ import annotations

import re
import secrets

import pytest

from tests.rigs.api_helpers import OPENAPI, Api, running_api
from tracker.contract.tokens import Keyring, TokenKind, verify


@pytest.fixture
async def api(settings, pg) -> Api:
    await pg.execute(
        "insert into profile_fields (name, type) values ('clicked_link', 'boolean') on conflict do nothing"
    )
    async with running_api(settings) as api:
        yield api


def unique_email() -> str:
    return f"p{secrets.token_hex(5)}@example.com"


def error_of(response) -> tuple[int, str]:
    body = response.json()
    assert set(body) >= {"error"} and body["error"]["message"], body
    return response.status_code, body["error"]["code"]


# -- auth --


async def test_requests_without_a_key_or_with_a_wrong_key_get_401(api: Api) -> None:
    for headers in ({}, {"authorization": "Basic abc"}, {"authorization": "Bearer trk_000000000000_nope"},
                    {"authorization": api.auth()["authorization"][:-2] + "xx"}):  # fmt: skip
        response = await api.client.get("/api/v1/resources", headers=headers)
        assert error_of(response) == (401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_key_without_the_scope_gets_403(api: Api) -> None:
    assert error_of(await api.call("POST", "/resources", key="read", json={"name": "x", "channel": "email"})) == (
        403, "forbidden"
    )  # fmt: skip
    assert error_of(await api.call("GET", "/resources", key="write")) == (403, "forbidden")
    assert (await api.call("GET", "/resources", key="read")).status_code == 200


async def test_a_revoked_key_stops_working(api: Api, pg) -> None:
    key_id = api.keys["read"][4:16]
    await pg.execute("update api_keys set revoked_at = now() where id = $1", key_id)
    assert error_of(await api.client.get("/api/v1/resources", headers=api.auth("read"))) == (401, "unauthorized")


async def test_keys_are_stored_hashed(api: Api, pg) -> None:
    rows = await pg.fetch("select id, secret_sha256 from api_keys")
    for key in api.keys.values():
        assert key.encode() not in b"".join(bytes(row["secret_sha256"]) for row in rows)


# -- profile fields and profiles --


async def test_custom_fields_are_declared_with_a_type_and_built_ins_are_fixed(api: Api) -> None:
    name = "tier_" + secrets.token_hex(3)
    created = await api.call("POST", "/profile-fields", json={"name": name, "type": "enum", "enum_values": ["a", "b"]})
    assert created.status_code == 201
    listed = (await api.call("GET", "/profile-fields")).json()["fields"]
    assert {"name": name, "type": "enum", "builtin": False, "enum_values": ["a", "b"]} in listed
    assert {f["name"] for f in listed if f["builtin"]} >= {"email", "phone", "external_id", "email_status"}
    assert error_of(await api.call("POST", "/profile-fields", json={"name": name, "type": "string"})) == (
        409, "duplicate_field"
    )  # fmt: skip
    assert error_of(await api.call("POST", "/profile-fields", json={"name": "email", "type": "string"})) == (
        422, "builtin_field"
    )  # fmt: skip
    assert error_of(await api.call("POST", "/profile-fields", json={"name": "x", "type": "enum"}))[0] == 422
    assert error_of(await api.call("POST", "/profile-fields", json={"name": "Bad Name", "type": "string"}))[0] == 422


async def test_profiles_are_created_read_looked_up_patched_and_deleted(api: Api) -> None:
    email = unique_email()
    external_id = "crm-" + secrets.token_hex(4)
    created = await api.call(
        "POST", "/profiles",
        json={"email": email.upper(), "external_id": external_id, "phone": "+1 415 555 0100",
              "fields": {"clicked_link": False}},
    )  # fmt: skip
    assert created.status_code == 201
    profile = created.json()
    assert (profile["email"], profile["phone"], profile["email_status"]) == (email, "+14155550100", "active")
    assert profile["fields"] == {"clicked_link": False}
    path = f"/profiles/{profile['id']}"
    assert (await api.call("GET", path)).json() == profile
    for key, value in (("email", email), ("external_id", external_id), ("phone", "+14155550100")):
        found = await api.call("GET", "/profiles/lookup", params={key: value})
        assert found.json()["id"] == profile["id"]
    patched = (await api.call("PATCH", path, json={"phone": None, "fields": {"clicked_link": True}})).json()
    assert (patched["phone"], patched["email"], patched["fields"]) == (None, email, {"clicked_link": True})
    removed = (await api.call("PATCH", path, json={"fields": {"clicked_link": None}})).json()
    assert removed["fields"] == {}
    assert (await api.call("DELETE", path)).status_code == 204
    assert error_of(await api.call("GET", path)) == (404, "not_found")
    assert error_of(await api.call("DELETE", path)) == (404, "not_found")
    assert error_of(await api.call("GET", "/profiles/lookup", params={"email": email})) == (404, "not_found")


async def test_values_are_checked_against_field_types_naming_the_field(api: Api) -> None:
    cases = [
        ({"fields": {"clicked_link": "yes"}}, "clicked_link"),
        ({"fields": {"no_such_field": 1}}, "no_such_field"),
        ({"email": "not-an-email"}, "email"),
        ({"phone": "555"}, "phone"),
        ({"email_status": "gone"}, "email_status"),
    ]
    for body, field in cases:
        response = await api.call("POST", "/profiles", json=body)
        assert response.status_code == 422, body
        assert field in response.json()["error"]["message"]


async def test_duplicate_email_or_external_id_is_409_and_changes_nothing(api: Api, pg) -> None:
    email, external_id = unique_email(), "dup-" + secrets.token_hex(4)
    first = (await api.call("POST", "/profiles", json={"email": email, "external_id": external_id})).json()
    other = (await api.call("POST", "/profiles", json={"email": unique_email()})).json()
    before = await pg.fetchval("select count(*) from profiles")
    assert error_of(await api.call("POST", "/profiles", json={"email": email})) == (409, "duplicate_email")
    assert error_of(await api.call("POST", "/profiles", json={"external_id": external_id})) == (
        409, "duplicate_external_id"
    )  # fmt: skip
    assert error_of(await api.call("PATCH", f"/profiles/{other['id']}", json={"email": email, "fields": {}})) == (
        409, "duplicate_email"
    )  # fmt: skip
    assert await pg.fetchval("select count(*) from profiles") == before
    assert (await api.call("GET", f"/profiles/{other['id']}")).json()["email"] == other["email"]
    assert first["id"] != other["id"]


async def test_bad_bodies_get_400_413_and_422_with_a_json_error(api: Api, settings) -> None:
    malformed = await api.call(
        "POST", "/profiles", content=b'{"email": "a@b.co",', headers={"content-type": "application/json"}
    )
    assert error_of(malformed) == (400, "malformed_json")
    assert "byte" in malformed.json()["error"]["message"] or "line" in malformed.json()["error"]["message"]
    assert error_of(await api.call("POST", "/profiles", content=b"")) == (400, "empty_body")
    unknown = await api.call("POST", "/profiles", json={"email": unique_email(), "colour": "red"})
    assert error_of(unknown) == (422, "unknown_field") and "colour" in unknown.json()["error"]["message"]
    huge = b'{"name": "' + b"x" * settings.edge.api_max_body_bytes + b'", "channel": "email"}'
    assert error_of(await api.call("POST", "/resources", content=huge)) == (413, "body_too_large")
    # An id segment that is not an id matches no route (edge.routing): no route, not "no such profile".
    assert error_of(await api.call("GET", "/profiles/abc")) == (404, "not_found")
    assert error_of(await api.client.get("/api/v1/nothing-here", headers=api.auth())) == (404, "not_found")


# -- resources and subscriptions --


async def test_subscribe_directly_or_with_double_opt_in_then_confirm_and_unsubscribe(api: Api) -> None:
    resource = (await api.call("POST", "/resources", json={"name": "Weekly", "channel": "email"})).json()
    assert (await api.call("GET", f"/resources/{resource['id']}")).json() == resource
    assert resource in (await api.call("GET", "/resources")).json()["resources"]
    profile = (await api.call("POST", "/profiles", json={"email": unique_email()})).json()
    base = f"/profiles/{profile['id']}/subscriptions"

    pending = (await api.call("POST", base, json={"resource_id": resource["id"], "double_opt_in": True})).json()
    assert (pending["status"], pending["subscribed_at"], pending["resource_name"]) == ("pending", None, "Weekly")
    confirmed = (await api.call("POST", f"{base}/{resource['id']}/confirm")).json()
    assert confirmed["status"] == "subscribed" and confirmed["confirmed_at"] and confirmed["subscribed_at"]
    # Subscribing again (even with double opt-in) keeps a subscribed profile subscribed.
    again = (await api.call("POST", base, json={"resource_id": resource["id"], "double_opt_in": True})).json()
    assert again["status"] == "subscribed"
    left = (await api.call("DELETE", f"{base}/{resource['id']}")).json()
    assert left["status"] == "unsubscribed" and left["unsubscribed_at"]
    assert error_of(await api.call("POST", f"{base}/{resource['id']}/confirm")) == (409, "unsubscribed")
    back = (await api.call("POST", base, json={"resource_id": resource["id"]})).json()
    assert back["status"] == "subscribed" and back["subscribed_at"] > confirmed["subscribed_at"]
    listed = (await api.call("GET", base)).json()["subscriptions"]
    assert [(s["resource_id"], s["status"]) for s in listed] == [(resource["id"], "subscribed")]


async def test_subscriptions_need_an_existing_profile_and_resource(api: Api) -> None:
    profile = (await api.call("POST", "/profiles", json={"email": unique_email()})).json()
    assert (
        error_of(await api.call("POST", f"/profiles/{profile['id']}/subscriptions", json={"resource_id": 10**12}))[0]
        == 404
    )
    assert error_of(await api.call("POST", "/profiles/999999999/subscriptions", json={"resource_id": 1}))[0] == 404
    assert error_of(await api.call("GET", "/profiles/999999999/subscriptions"))[0] == 404
    assert error_of(await api.call("DELETE", f"/profiles/{profile['id']}/subscriptions/999999999"))[0] == 404
    assert error_of(await api.call("POST", "/resources", json={"name": "x", "channel": "fax"}))[0] == 422


# -- messages --


async def test_registering_a_message_lists_its_links_and_new_content_makes_a_new_version(api: Api) -> None:
    resource = (await api.call("POST", "/resources", json={"name": "News", "channel": "email"})).json()
    html = (
        f'<a href="https://a.example/?x=1&amp;y=2" update-clicked_link="true">a</a>'
        f'<a href="https://a.example/?x=1&amp;y=2" subscribe-to="{resource["id"]}">b</a>'
        '<a href="mailto:x@example.com">m</a><a href="{{unsubscribe_url}}">u</a>'
    )
    created = await api.call(
        "POST", "/messages", json={"channel": "email", "name": "News 1", "content": html, "resource_id": resource["id"]}
    )
    assert created.status_code == 201
    message = created.json()
    assert message["version"] == 1
    assert message["links"] == [
        {"index": 0, "url": "https://a.example/?x=1&y=2", "attributes": {"update-clicked_link": "true"}},
        {"index": 1, "url": "https://a.example/?x=1&y=2", "attributes": {"subscribe-to": str(resource["id"])}},
    ]
    assert (await api.call("GET", f"/messages/{message['id']}")).json() == message
    second = await api.call(
        "POST", f"/messages/{message['id']}/versions", json={"content": '<a href="https://b.example/">b</a>'}
    )
    assert second.status_code == 201
    assert (second.json()["version"], second.json()["links"][0]["url"]) == (2, "https://b.example/")
    assert (await api.call("GET", f"/messages/{message['id']}")).json()["version"] == 2


async def test_bad_message_content_is_422_and_stores_nothing(api: Api, pg) -> None:
    before = await pg.fetchval("select count(*) from messages")
    cases = [
        ({"channel": "email", "content": '<a href="https://a.example/" update-nope="1">x</a>'}, "unknown_field"),
        ({"channel": "email", "content": '<a href="https://a.example/" update-clicked_link="maybe">x</a>'},
         "invalid_link_attribute"),
        ({"channel": "email", "content": '<a href="https://a.example/" subscribe-to="99999999">x</a>'},
         "unknown_resource"),
        ({"channel": "email", "content": "x", "resource_id": 99999999}, "unknown_resource"),
        ({"channel": "fax", "content": "x"}, "invalid_request"),
    ]  # fmt: skip
    for body, code in cases:
        assert error_of(await api.call("POST", "/messages", json=body)) == (422, code), body
    assert await pg.fetchval("select count(*) from messages") == before
    assert error_of(await api.call("POST", "/messages/99999999/versions", json={"content": "x"})) == (404, "not_found")


async def test_stats_are_the_counters_the_flusher_keeps(api: Api, pg) -> None:
    message = (await api.call("POST", "/messages", json={"channel": "email", "content": "<p>hi</p>"})).json()
    assert (await api.call("GET", f"/messages/{message['id']}/stats")).json() == {
        "message_id": message["id"], "counters": {}
    }  # fmt: skip
    await pg.execute(
        "insert into message_counters (message_id, kind, total, uniques, first_at, last_at)"
        " values ($1, 'opened', 5, 3, now() - interval '1 hour', now()), ($1, 'clicked', 2, 2, now(), now())",
        message["id"],
    )
    stats = (await api.call("GET", f"/messages/{message['id']}/stats")).json()
    assert {kind: (c["total"], c["uniques"]) for kind, c in stats["counters"].items()} == {
        "opened": (5, 3), "clicked": (2, 2)
    }  # fmt: skip
    assert error_of(await api.call("GET", "/messages/99999999/stats")) == (404, "not_found")


async def test_render_returns_each_recipients_tracked_content(api: Api, settings) -> None:
    message = (
        await api.call("POST", "/messages", json={"channel": "email", "content": '<a href="https://r.example/">r</a>'})
    ).json()
    ids = [(await api.call("POST", "/profiles", json={"email": unique_email()})).json()["id"] for _ in range(3)]
    response = await api.call(
        "POST", f"/messages/{message['id']}/render", json={"profile_ids": [*ids, ids[0], 999999999]}
    )
    rendered = response.json()
    assert (rendered["version"], rendered["channel"], rendered["unknown_profile_ids"]) == (1, "email", [999999999])
    assert [r["profile_id"] for r in rendered["recipients"]] == ids
    keys = Keyring(settings.signing_keys)
    for recipient in rendered["recipients"]:
        [path] = re.findall(r'href="http://[^/]+(/c/[\w-]+)"', recipient["body"])
        assert verify(keys, path[3:])[3] == recipient["profile_id"]
        assert verify(keys, recipient["headers"]["X-Tracker-Ref"])[0] == TokenKind.REF
        assert "List-Unsubscribe" not in recipient["headers"]  # no resource: nothing to unsubscribe from
        location = (await api.client.get(path)).headers["location"]
        assert location == "https://r.example/"
    too_many = {"profile_ids": list(range(1, settings.edge.api_render_max_recipients + 2))}
    assert error_of(await api.call("POST", f"/messages/{message['id']}/render", json=too_many)) == (
        422,
        "too_many_recipients",
    )
    assert error_of(await api.call("POST", "/messages/99999999/render", json={"profile_ids": ids})) == (
        404,
        "not_found",
    )
    assert error_of(await api.call("POST", f"/messages/{message['id']}/render", json={"profile_ids": []}))[0] == 422


# -- the schema --


async def test_the_openapi_document_is_served_and_covers_every_route(api: Api) -> None:
    response = await api.client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document == OPENAPI
    assert document["openapi"].startswith("3.1")
    assert {"/api/v1/profiles", "/api/v1/messages/{message_id}/render", "/api/v1/profiles/import"} <= set(
        document["paths"]
    )
    for operations in document["paths"].values():
        for operation in operations.values():
            assert "401" in operation["responses"] and "403" in operation["responses"]


# -- input Postgres would refuse: a 422 naming the field, never a 500 --


async def test_nul_characters_get_422_naming_the_field(api: Api) -> None:
    cases = [
        ("POST", "/resources", {"name": "a\x00b", "channel": "email"}, "$.name"),
        ("POST", "/messages", {"channel": "sms", "content": "hi\x00"}, "$.content"),
        ("POST", "/profiles", {"external_id": "x\x00"}, "$.external_id"),
        ("POST", "/profiles", {"email": unique_email(), "fields": {"clicked_link": "\x00"}}, "$.fields.clicked_link"),
    ]
    for method, path, body, where in cases:
        response = await api.call(method, path, json=body)
        assert error_of(response) == (422, "invalid_text"), (path, response.text)
        assert where in response.json()["error"]["message"]
    lookup = await api.call("GET", "/profiles/lookup", params={"external_id": "a\x00"})
    assert error_of(lookup) == (422, "invalid_text") and "external_id" in lookup.json()["error"]["message"]


async def test_a_render_version_past_postgres_integer_gets_422(api: Api) -> None:
    message = (await api.call("POST", "/messages", json={"channel": "sms", "content": "hi"})).json()
    profile = (await api.call("POST", "/profiles", json={"email": unique_email()})).json()
    for version in (2**31, 2**63 - 1):
        response = await api.call(
            "POST", f"/messages/{message['id']}/render", json={"profile_ids": [profile["id"]], "version": version}
        )
        assert error_of(response) == (422, "invalid_request") and "$.version" in response.json()["error"]["message"]


async def test_whole_numbers_written_with_a_decimal_point_are_integers(api: Api) -> None:
    message = (await api.call("POST", "/messages", json={"channel": "sms", "content": "hi"})).json()
    profile = (await api.call("POST", "/profiles", json={"email": unique_email()})).json()
    response = await api.call(
        "POST", f"/messages/{message['id']}/render", json={"profile_ids": [float(profile["id"])], "version": 1.0}
    )
    assert response.status_code == 200 and response.json()["recipients"][0]["profile_id"] == profile["id"]
    fraction = await api.call("POST", f"/messages/{message['id']}/render", json={"profile_ids": [1.5]})
    assert error_of(fraction) == (422, "invalid_request")

"""Hook secrets at rest: sealed in Postgres, opened by the forwarder only, never shown, not even in part."""

from __future__ import annotations

import json

import pytest

from forwarder.worker import HooksWorker
from tests.rigs.api_helpers import running_api
from tests.rigs.flusher_helpers import drain, event, make_message, push
from tests.rigs.hook_helpers import SECRET, hook_settings, http_receiver, no_hooks_left  # noqa: F401
from tracker.domain.hook_secrets import unseal_destination
from tracker.domain.hook_streams import create_groups, set_hooks_count
from tracker.domain.secret_box import SecretBox, SecretKeyMissing

TOKEN = "Bearer crm-token-123456"


def http_hook(url: str, **extra: object) -> dict:
    return {"name": "crm", "destination": {"type": "http", "url": url, "secret": SECRET, "timeout_s": 0.3,
                                           "headers": {"Authorization": TOKEN}, **extra}}  # fmt: skip


async def stored(pg, hook_id: int) -> str:
    return await pg.fetchval("select secrets::text from hooks where id = $1", hook_id)


async def test_secrets_are_sealed_in_postgres_and_opened_only_to_deliver(settings, redis, pg):
    settings = hook_settings(settings)
    message = await make_message(pg)
    with http_receiver() as receiver:
        async with running_api(settings) as api:
            hook_id = (await api.call("POST", "/hooks", json=http_hook(receiver.url))).json()["id"]
            column = await stored(pg, hook_id)
            config = await pg.fetchval("select config::text from hooks where id = $1", hook_id)
            for text in (column, config):
                assert SECRET not in text and "crm-token" not in text and SECRET[-4:] not in text
            assert json.loads(column)["secret"].startswith("sealed:v1:1:")
            await push(redis, settings, [event(message, 1)])
            await drain(settings)
            await HooksWorker(settings, burst=True).run()
    (received,) = receiver.accepted
    assert received.signed_by(SECRET) and received.headers["authorization"] == TOKEN


async def test_no_key_sees_any_part_of_a_secret_and_a_left_out_secret_is_kept(settings, redis, pg):
    settings = hook_settings(settings)
    message = await make_message(pg)
    with http_receiver() as receiver:
        async with running_api(settings) as api:
            created = (await api.call("POST", "/hooks", json=http_hook(receiver.url))).json()
            kafka = {"name": "k", "destination": {
                "type": "kafka", "bootstrap_servers": "127.0.0.1:9092", "topic": "t", "security_protocol": "SASL_SSL",
                "sasl_username": "bob", "sasl_password": "kafka-pass-98765",
            }}  # fmt: skip
            amqp = {"name": "mq", "destination": {"type": "amqp", "url": "amqp://bob:hunter2hunter2@127.0.0.1/",
                                                  "queue": "events"}}  # fmt: skip
            assert (await api.call("POST", "/hooks", json=kafka)).status_code == 201
            assert (await api.call("POST", "/hooks", json=amqp)).status_code == 201
            for key in ("read", "rw"):
                listed = (await api.call("GET", "/hooks", key=key)).json()["hooks"]
                text = json.dumps(listed)
                for secret in (SECRET, SECRET[-4:], "crm-token", "3456", "kafka-pass", "8765", "hunter2"):
                    assert secret not in text
                views = {hook["name"]: hook["destination"] for hook in listed}
                assert views["crm"]["secret"] == "set" and views["crm"]["headers"] == {"Authorization": "set"}
                assert views["k"]["sasl_password"] == "set"
                assert views["mq"]["url"] == "amqp://bob:***@127.0.0.1/"
            # An update that leaves the secret out keeps it: still set, still sealed, still signing.
            patched = await api.call("PATCH", f"/hooks/{created['id']}",
                                     json={"destination": {"type": "http", "url": receiver.url}})  # fmt: skip
            assert patched.status_code == 200 and patched.json()["destination"]["secret"] == "set"
            assert SECRET not in await stored(pg, created["id"])
            await push(redis, settings, [event(message, 1)])
            await drain(settings)
            await HooksWorker(settings, burst=True).run()
    assert receiver.accepted and receiver.accepted[0].signed_by(SECRET)


async def test_secrets_stored_in_the_clear_before_still_deliver_and_are_sealed_at_the_next_write(
    settings, redis, pg
):
    settings = hook_settings(settings)
    message = await make_message(pg)
    with http_receiver() as receiver:
        # A row as the API wrote it before sealing: the secrets in the clear, the view with a hint.
        destination = {"type": "http", "url": receiver.url, "secret": SECRET, "headers": {"Authorization": TOKEN},
                       "timeout_s": 0.3, "max_events": 500}  # fmt: skip
        view = {**destination, "secret": f"set, ends in {SECRET[-4:]}", "headers": {"Authorization": "set"}}
        hook_id = await pg.fetchval(
            "insert into hooks (name, destination, config, secrets) values ('old', 'http', $1, $2) returning id",
            json.dumps(view), json.dumps(destination),
        )  # fmt: skip
        await create_groups(redis, settings.stream_prefix, settings.stream_shards, hook_id)
        await set_hooks_count(redis, settings.stream_prefix, settings.stream_shards, 1)
        async with running_api(settings) as api:
            shown = (await api.call("GET", f"/hooks/{hook_id}", key="read")).json()["destination"]
            assert shown["secret"] == "set" and SECRET[-4:] not in json.dumps(shown)
            await push(redis, settings, [event(message, 1)])
            await drain(settings)
            await HooksWorker(settings, burst=True).run()
            assert receiver.accepted[0].signed_by(SECRET)
            assert (await api.call("POST", f"/hooks/{hook_id}/pause")).status_code == 200
            column = json.loads(await stored(pg, hook_id))
            assert column["secret"].startswith("sealed:") and column["headers"]["Authorization"].startswith("sealed:")
            await api.call("POST", f"/hooks/{hook_id}/resume")
            await push(redis, settings, [event(message, 2)])
            await drain(settings)
            await HooksWorker(settings, burst=True).run()
    assert len(receiver.accepted) == 2 and receiver.accepted[1].signed_by(SECRET)
    assert receiver.accepted[1].headers["authorization"] == TOKEN


async def test_without_a_key_a_secret_is_refused_rather_than_stored_in_the_clear(settings, redis, pg):
    settings = hook_settings(settings, secret_keys="")
    with http_receiver() as receiver:
        async with running_api(settings) as api:
            # Not through api.call: 503 is not (yet) among the documented answers of POST /hooks.
            refused = await api.client.post("/api/v1/hooks", headers=api.auth(), json=http_hook(receiver.url))
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "secrets_key_missing"
            assert "TRACKER_HOOKS_SECRET_KEYS" in refused.json()["error"]["message"]
            assert await pg.fetchval("select count(*) from hooks") == 0
            plain = {"name": "open", "destination": {"type": "http", "url": receiver.url}}
            assert (await api.call("POST", "/hooks", json=plain)).status_code == 201


def test_keys_rotate_and_a_sealed_value_opens_only_with_its_key_for_its_field():
    old, new = bytes(range(32)), bytes(range(1, 33))
    sealed = SecretBox({1: old}).seal("s3cret-value-0123456789", "http.secret")
    assert "s3cret" not in sealed and sealed.startswith("sealed:v1:1:")
    rotated = SecretBox({2: new, 1: old}, key_id=2)
    assert rotated.open(sealed, "http.secret") == "s3cret-value-0123456789"
    assert rotated.seal("s3cret-value-0123456789", "http.secret").startswith("sealed:v1:2:")
    with pytest.raises(SecretKeyMissing, match="key 1"):
        SecretBox({2: new}).open(sealed, "http.secret")
    with pytest.raises(SecretKeyMissing):  # moved to another field
        rotated.open(sealed, "kafka.sasl_password")
    with pytest.raises(SecretKeyMissing):
        SecretBox({1: new}).open(sealed, "http.secret")  # another key under the same id
    document = json.dumps({"type": "http", "url": "https://crm.example/", "secret": sealed})
    assert unseal_destination(document, rotated).secret == "s3cret-value-0123456789"

"""Hooks cannot be turned against our own network: where they may deliver, and what a test tells."""

from __future__ import annotations

import asyncio
import socket

import pytest

from forwarder.worker import HooksWorker
from tests.rigs.api_helpers import running_api
from tests.rigs.flusher_helpers import drain, event, make_message, push
from tests.rigs.hook_helpers import (  # noqa: F401
    SECRET_KEYS,
    hook_settings,
    http_receiver,
    no_hooks_left,
    running_worker,
    until,
)

INTERNAL_URLS = [
    "http://127.0.0.1:6379/", "http://localhost:5432/", "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/", "http://10.0.0.8/", "http://192.168.1.1/",
    "http://[::1]:8080/", "http://[fd00:ec2::254]/", "http://127.1/", "http://0x7f000001/",
    "http://[::ffff:10.0.0.1]/", "http://224.0.0.1/", "http://0.0.0.0/",
]  # fmt: skip


def http_hook(url: str, **extra: object) -> dict:
    return {"name": "h", "destination": {"type": "http", "url": url, "timeout_s": 0.3, **extra}}


async def test_by_default_internal_destinations_are_refused_naming_the_field(settings, redis):
    settings = settings.replace(forwarder={"secret_keys": SECRET_KEYS})  # no allow-list: the default
    async with running_api(settings) as api:
        for url in INTERNAL_URLS:
            answer = await api.call("POST", "/hooks", json=http_hook(url))
            assert answer.status_code == 422, url
            error = answer.json()["error"]
            assert error["code"] == "destination_not_allowed" and error["message"].startswith("destination.url:")
        amqp = {"name": "mq", "destination": {"type": "amqp", "url": "amqp://guest:guest@10.1.2.3/", "queue": "q"}}
        answer = await api.call("POST", "/hooks", json=amqp)
        assert answer.status_code == 422 and answer.json()["error"]["message"].startswith("destination.url:")
        servers = "kafka.example.com:9092,127.0.0.1:9092"
        kafka = {"name": "k", "destination": {"type": "kafka", "topic": "t", "bootstrap_servers": servers}}
        answer = await api.call("POST", "/hooks", json=kafka)
        assert answer.status_code == 422
        assert answer.json()["error"]["message"].startswith("destination.bootstrap_servers:")
        # PATCH too.
        public = await api.call("POST", "/hooks", json=http_hook("https://crm.example.com/in"))
        assert public.status_code == 201
        moved = await api.call("PATCH", f"/hooks/{public.json()['id']}",
                               json={"destination": {"type": "http", "url": "http://169.254.169.254/"}})  # fmt: skip
        assert moved.status_code == 422 and moved.json()["error"]["code"] == "destination_not_allowed"


async def test_the_allow_list_opens_internal_receivers_and_nothing_else(settings, redis):
    settings = hook_settings(settings, allowed_destinations=("10.20.0.0/16", "crm.internal", ".corp.example"))
    async with running_api(settings) as api:
        for url in ("http://10.20.3.4/", "http://crm.internal/", "http://a.b.corp.example/"):
            assert (await api.call("POST", "/hooks", json=http_hook(url))).status_code == 201, url
        for url in ("http://10.21.0.1/", "http://127.0.0.1/", "http://metadata.google.internal/"):
            assert (await api.call("POST", "/hooks", json=http_hook(url))).status_code == 422, url


async def test_a_host_header_or_framing_header_is_refused(settings, redis):
    settings = hook_settings(settings)
    async with running_api(settings) as api:
        for name in ("Host", "host", "Content-Length", "Transfer-Encoding"):
            body = http_hook("https://crm.example.com/", headers={name: "x"})
            answer = await api.call("POST", "/hooks", json=body)
            assert answer.status_code == 422
            assert answer.json()["error"]["message"].startswith(f"destination.headers.{name}")


async def test_at_delivery_every_resolved_address_is_checked_again(settings, redis, pg):
    """A name that passed when the hook was made and points inside now (DNS rebinding) gets nothing."""
    name = socket.gethostname()
    try:
        loopback = {info[4][0] for info in socket.getaddrinfo(name, 80)} <= {"127.0.0.1", "::1"}
    except OSError:
        loopback = False
    if not loopback:
        pytest.skip(f"this machine's name {name!r} does not resolve to loopback only")
    settings = hook_settings(settings, allowed_destinations=(), pause_after_failures=1)
    message = await make_message(pg)
    with http_receiver() as receiver:
        async with running_api(settings) as api:
            url = f"http://{name}:{receiver.port}/events"
            hook_id = (await api.call("POST", "/hooks", json=http_hook(url))).json()["id"]  # a name: no DNS here
            await push(redis, settings, [event(message, 1)])
            await drain(settings)
            await HooksWorker(settings, burst=True).run()
            hook = (await api.call("GET", f"/hooks/{hook_id}", key="read")).json()
    assert not receiver.requests
    assert hook["last_error"].startswith("HTTP: destination not allowed") and "loopback" in hook["last_error"]


async def test_a_test_delivery_tells_only_the_status_class_and_not_for_a_paused_hook(settings, redis, pg):
    settings = hook_settings(settings, pause_after_failures=0, dead_letter_after_s=0.0)
    message = await make_message(pg)
    with http_receiver() as receiver:
        receiver.default = "500"  # answers "receiver says no"
        async with running_api(settings) as api, running_worker(settings):
            hook_id = (await api.call("POST", "/hooks", json=http_hook(receiver.url))).json()["id"]
            answer = (await api.call("POST", f"/hooks/{hook_id}/test")).json()
            assert answer["ok"] is False and answer["answer"] == "5xx"
            receiver.default = "200"
            assert (await api.call("POST", f"/hooks/{hook_id}/test")).json()["answer"] == "2xx"
            receiver.default = "500"
            await push(redis, settings, [event(message, 1)])
            await drain(settings)
            await until_failed(api, hook_id)
            hook = (await api.call("GET", f"/hooks/{hook_id}", key="read")).json()
            assert hook["last_error"] == "HTTP 500"  # the code, none of the receiver's words
            dead = (await api.call("GET", f"/hooks/{hook_id}/dead-letters", key="read")).json()["dead_letters"]
            assert "says no" not in str(dead)
            await api.call("POST", f"/hooks/{hook_id}/pause")
            sent = len(receiver.requests)
            # Not through api.call: 409 is not (yet) among the documented answers of the test route.
            paused = await api.client.post(f"/api/v1/hooks/{hook_id}/test", headers=api.auth())
            assert paused.status_code == 409 and paused.json()["error"]["code"] == "hook_paused"
            assert len(receiver.requests) == sent


async def until_failed(api, hook_id: int) -> None:
    for _ in range(500):
        if (await api.call("GET", f"/hooks/{hook_id}")).json()["last_error"]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the delivery never failed")


async def test_a_refused_connection_and_a_timeout_read_the_same(settings, redis, free_port):
    settings = hook_settings(settings)
    with http_receiver() as receiver:
        receiver.default = "hang"  # answers after 1 s, past the hook's 0.3 s
        async with running_api(settings) as api, running_worker(settings):
            answers = []
            for url in (f"http://127.0.0.1:{free_port}/", receiver.url):
                hook_id = (await api.call("POST", "/hooks", json=http_hook(url))).json()["id"]
                answers.append((await api.call("POST", f"/hooks/{hook_id}/test")).json()["answer"])
    assert answers == ["connect failed", "connect failed"]


async def test_tests_give_the_database_connection_back_while_they_wait_and_are_bounded(settings, redis):
    pool_size = settings.edge.pg_pool_size
    settings = hook_settings(settings, test_concurrency=pool_size, test_timeout_s=5.0)
    with http_receiver() as receiver:
        receiver.default = "gate"  # held until the test opens the gate
        async with running_api(settings) as api, running_worker(settings):
            hook_id = (await api.call("POST", "/hooks", json=http_hook(receiver.url, timeout_s=30))).json()["id"]
            tests = [asyncio.create_task(api.call("POST", f"/hooks/{hook_id}/test")) for _ in range(pool_size)]
            try:
                await until(lambda: len(receiver.requests) == pool_size, 10, "every test at the destination")
                # As many tests as pool connections are waiting: the API still answers, and one more test is refused.
                assert (await api.call("GET", f"/hooks/{hook_id}")).status_code == 200
                extra = await api.client.post(f"/api/v1/hooks/{hook_id}/test", headers=api.auth())
                assert extra.status_code == 429 and extra.json()["error"]["code"] == "too_many_tests"
                assert not any(task.done() for task in tests)  # all still waiting on the gate
            finally:
                receiver.gate.set()
            assert [(await task).json()["answer"] for task in tests] == ["2xx"] * pool_size

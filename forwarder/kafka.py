"""Kafka destination (aiokafka): one record per event, keyed by the profile id, acks=all.

The key keeps one profile's events in one partition, in order. Records carry the
event id (`idempotency_key`) and the batch id in their headers; the value is the
event's JSON document. The idempotent producer is on unless the hook turns it off
(brokers without InitProducerId support, such as tansu's memory store, refuse it).
A delivery succeeds when every record is acknowledged by all in-sync replicas.
"""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaProducer

from forwarder.delivery import Delivery, DeliveryFailed
from tracker.domain.hook_definitions import KafkaDestination, encode_json, event_document

_REQUEST_TIMEOUT_MS = 30_000


class Kafka:
    def __init__(self, spec: KafkaDestination) -> None:
        self.spec = spec
        self.producer: AIOKafkaProducer | None = None

    async def _producer(self) -> AIOKafkaProducer:
        if self.producer is not None:
            return self.producer
        spec = self.spec
        options = {}
        if spec.security_protocol.startswith("SASL"):
            options = {"sasl_mechanism": "PLAIN", "sasl_plain_username": spec.sasl_username,
                       "sasl_plain_password": spec.sasl_password}  # fmt: skip
        producer = AIOKafkaProducer(
            bootstrap_servers=spec.bootstrap_servers,
            acks="all",
            enable_idempotence=spec.idempotent,
            security_protocol=spec.security_protocol,
            request_timeout_ms=_REQUEST_TIMEOUT_MS,
            linger_ms=5,
            **options,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self.producer = producer
        return producer

    async def send(self, delivery: Delivery) -> str:
        try:
            producer = await self._producer()
            futures = []
            batch_header = ("batch_id", delivery.batch_id.encode())
            for event in delivery.events:
                headers = [("idempotency_key", str(uuid.UUID(bytes=event.id)).encode()), batch_header,
                           ("kind", event.kind.encode())]  # fmt: skip
                futures.append(await producer.send(
                    self.spec.topic, encode_json(event_document(event)), key=str(event.profile_id).encode(),
                    headers=headers,
                ))  # fmt: skip
            await asyncio.gather(*futures)
        except Exception as exc:  # any aiokafka error: the delivery is not acknowledged
            await self.close()
            raise DeliveryFailed(f"Kafka: {type(exc).__name__}: {exc}"[:500]) from None
        return f"Kafka acknowledged {len(delivery.events)}"

    async def close(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), 10)
            except Exception:  # stopping a broken producer: nothing more to do
                pass

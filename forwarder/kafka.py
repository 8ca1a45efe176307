"""Kafka destination (aiokafka): one record per event, keyed by the profile id, acks=all.

The key keeps one profile's events in one partition, in order. Records carry the
event id (`idempotency_key`) and the batch id in their headers; the value is the
event's JSON document. The idempotent producer is on unless the hook turns it off
(brokers without InitProducerId support, such as tansu's memory store, refuse it).
A delivery succeeds when every record is acknowledged by all in-sync replicas.

Reach: the bootstrap servers are resolved and checked against the destination
policy at each start, and PLAINTEXT connects to the checked addresses (TLS needs
the names). The brokers the cluster advertises are the broker's choice: a literal
address or known name that is not allowed stops the producer as the metadata
arrives, before any connection to it; advertised names are resolved and checked
before every send. aiokafka resolves those names itself when it connects, so a
name that changes between the check and a connect is not caught there.
"""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaProducer

from forwarder.delivery import NO_ANSWER, REFUSED, Delivery, DeliveryFailed
from tracker.domain.destination_policy import DestinationPolicy, DestinationRefused
from tracker.domain.hook_definitions import KafkaDestination, encode_json, event_document, split_host_port

_REQUEST_TIMEOUT_MS = 30_000


class Kafka:
    def __init__(self, spec: KafkaDestination, policy: DestinationPolicy) -> None:
        self.spec = spec
        self.policy = policy
        self.producer: AIOKafkaProducer | None = None
        self.checked_brokers: set[tuple[str, int]] = set()
        self.refused = ""  # an advertised broker the policy refused (set by the metadata listener)

    async def _bootstrap_servers(self) -> list[str]:
        servers = []
        for item in self.spec.bootstrap_servers.split(","):
            if not item.strip():
                continue
            host, port = split_host_port(item, 9092)
            addresses = await self.policy.resolve(host, port)
            if self.spec.security_protocol in ("SSL", "SASL_SSL"):
                servers.append(item.strip())
            else:
                address = addresses[0]
                servers.append(f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
        return servers

    def _on_metadata(self, cluster: object) -> None:
        """Runs as metadata arrives, before any connection to a broker in it: no DNS here, literals and names."""
        for broker in cluster.brokers():  # type: ignore[attr-defined]
            problem = self.policy.check_host(broker.host)
            if problem:
                self.refused = f"advertised broker {problem}"
                raise DestinationRefused(self.refused)

    async def _check_brokers(self, producer: AIOKafkaProducer) -> None:
        for broker in producer.client.cluster.brokers():
            if (broker.host, broker.port) not in self.checked_brokers:
                await self.policy.resolve(broker.host, broker.port)
                self.checked_brokers.add((broker.host, broker.port))

    async def _producer(self) -> AIOKafkaProducer:
        if self.producer is not None:
            return self.producer
        spec = self.spec
        options = {}
        if spec.security_protocol.startswith("SASL"):
            options = {"sasl_mechanism": "PLAIN", "sasl_plain_username": spec.sasl_username,
                       "sasl_plain_password": spec.sasl_password}  # fmt: skip
        producer = AIOKafkaProducer(
            bootstrap_servers=await self._bootstrap_servers(),
            acks="all",
            enable_idempotence=spec.idempotent,
            security_protocol=spec.security_protocol,
            request_timeout_ms=_REQUEST_TIMEOUT_MS,
            linger_ms=5,
            **options,
        )
        producer.client.cluster.add_listener(self._on_metadata)
        try:
            await producer.start()
            await self._check_brokers(producer)
        except BaseException:
            await producer.stop()
            raise
        self.producer = producer
        return producer

    async def send(self, delivery: Delivery) -> str:
        try:
            producer = await self._producer()
            if self.refused:
                raise DestinationRefused(self.refused)
            await self._check_brokers(producer)
        except DestinationRefused as exc:
            await self.close()
            raise DeliveryFailed(f"Kafka: destination not allowed ({exc})", answer=REFUSED) from None
        except Exception as exc:  # refused, timed out, not Kafka: all read the same
            await self.close()
            raise DeliveryFailed("Kafka: connect failed", answer=NO_ANSWER,
                                 detail=f"Kafka: {type(exc).__name__}: {exc}"[:500]) from None  # fmt: skip
        try:
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
            raise DeliveryFailed(f"Kafka: not acknowledged ({type(exc).__name__})", answer="not acknowledged",
                                 detail=f"Kafka: {type(exc).__name__}: {exc}"[:500]) from None  # fmt: skip
        return "acknowledged"

    async def close(self) -> None:
        producer, self.producer = self.producer, None
        self.checked_brokers.clear()
        self.refused = ""
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), 10)
            except Exception:  # stopping a broken producer: nothing more to do
                pass

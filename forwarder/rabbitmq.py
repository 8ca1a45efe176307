"""RabbitMQ destination (aio-pika): one persistent message per event, publisher confirms.

The default exchange with `queue` as the routing key, or a named exchange with the
routing key template filled from each event (`event.{kind}.{channel}`). Every message
carries the event id as `message_id` (the idempotency key) and the batch id in its
headers. Publishes of a delivery go out together and the delivery succeeds when the
broker has confirmed every one; through the default exchange they are mandatory, so a
missing queue is a failure rather than a silent drop.
"""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from forwarder.delivery import Delivery, DeliveryFailed
from tracker.config import redact_url
from tracker.domain.hook_definitions import AmqpDestination, encode_json, event_document

_CONNECT_TIMEOUT_S = 10.0
_CONFIRM_TIMEOUT_S = 30.0


class RabbitMQ:
    def __init__(self, spec: AmqpDestination) -> None:
        self.spec = spec
        self.connection: AbstractConnection | None = None
        self.channel: AbstractChannel | None = None
        self.exchange: AbstractExchange | None = None

    async def _exchange(self) -> AbstractExchange:
        if self.exchange is not None and self.channel is not None and not self.channel.is_closed:
            return self.exchange
        await self.close()
        self.connection = await aio_pika.connect(self.spec.url, timeout=_CONNECT_TIMEOUT_S)
        self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        if self.spec.exchange:
            self.exchange = await self.channel.get_exchange(self.spec.exchange, ensure=True)
        else:
            self.exchange = self.channel.default_exchange
        return self.exchange

    def routing_key(self, event: object) -> str:
        if not self.spec.exchange:
            return self.spec.queue
        return self.spec.routing_key.format(
            kind=event.kind, channel=event.channel, message_id=event.message_id, profile_id=event.profile_id  # type: ignore[attr-defined]
        )

    async def send(self, delivery: Delivery) -> str:
        try:
            exchange = await self._exchange()
            mandatory = not self.spec.exchange
            publishes = []
            for event in delivery.events:
                message = aio_pika.Message(
                    encode_json(event_document(event)),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=str(uuid.UUID(bytes=event.id)),
                    headers={"batch_id": delivery.batch_id, "hook_id": delivery.hook_id, "kind": event.kind},
                    type=event.kind,
                )
                publishes.append(exchange.publish(message, self.routing_key(event), mandatory=mandatory))
            await asyncio.wait_for(asyncio.gather(*publishes), _CONFIRM_TIMEOUT_S)
        except TimeoutError:
            await self.close()
            raise DeliveryFailed(f"RabbitMQ: no confirm within {_CONFIRM_TIMEOUT_S}s") from None
        except Exception as exc:  # aio-pika/aiormq raise many kinds; all mean "not confirmed"
            await self.close()
            where = redact_url(self.spec.url)
            raise DeliveryFailed(f"RabbitMQ ({where}): {type(exc).__name__}: {exc}"[:500]) from None
        return f"RabbitMQ confirmed {len(delivery.events)}"

    async def close(self) -> None:
        connection, self.connection, self.channel, self.exchange = self.connection, None, None, None
        if connection is not None and not connection.is_closed:
            try:
                await asyncio.wait_for(connection.close(), 5)
            except Exception:  # closing a broken connection: nothing more to do
                pass

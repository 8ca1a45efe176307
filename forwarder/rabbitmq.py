"""RabbitMQ destination (aio-pika): one persistent message per event, publisher confirms.

The default exchange with `queue` as the routing key, or a named exchange with the
routing key template filled from each event (`event.{kind}.{channel}`). Every message
carries the event id as `message_id` (the idempotency key) and the batch id in its
headers. Publishes of a delivery go out together and the delivery succeeds when the
broker has confirmed every one; through the default exchange they are mandatory, so a
missing queue is a failure rather than a silent drop.

The broker's host is resolved and checked against the destination policy at each
connect; `amqp://` then connects to the checked address. `amqps://` connects by
name, as the certificate check needs it (aiormq takes no separate TLS name), so a
name that changes between the check and the connect is not caught there.
"""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import yarl
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from forwarder.delivery import NO_ANSWER, REFUSED, Delivery, DeliveryFailed
from tracker.config import redact_url
from tracker.domain.destination_policy import DestinationPolicy, DestinationRefused
from tracker.domain.hook_definitions import AmqpDestination, encode_json, event_document

_CONNECT_TIMEOUT_S = 10.0
_CONFIRM_TIMEOUT_S = 30.0


class RabbitMQ:
    def __init__(self, spec: AmqpDestination, policy: DestinationPolicy) -> None:
        self.spec = spec
        self.policy = policy
        self.connection: AbstractConnection | None = None
        self.channel: AbstractChannel | None = None
        self.exchange: AbstractExchange | None = None

    async def _exchange(self) -> AbstractExchange:
        if self.exchange is not None and self.channel is not None and not self.channel.is_closed:
            return self.exchange
        await self.close()
        self.connection = await aio_pika.connect(await self._checked_url(), timeout=_CONNECT_TIMEOUT_S)
        self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        if self.spec.exchange:
            self.exchange = await self.channel.get_exchange(self.spec.exchange, ensure=True)
        else:
            self.exchange = self.channel.default_exchange
        return self.exchange

    async def _checked_url(self) -> str:
        url = yarl.URL(self.spec.url)
        try:
            addresses = await self.policy.resolve(url.host or "", url.port or (5671 if url.scheme == "amqps" else 5672))
        except DestinationRefused as exc:
            raise DeliveryFailed(f"RabbitMQ: destination not allowed ({exc})", answer=REFUSED) from None
        return self.spec.url if url.scheme == "amqps" else str(url.with_host(addresses[0]))

    def routing_key(self, event: object) -> str:
        if not self.spec.exchange:
            return self.spec.queue
        return self.spec.routing_key.format(
            kind=event.kind, channel=event.channel, message_id=event.message_id, profile_id=event.profile_id  # type: ignore[attr-defined]
        )

    async def send(self, delivery: Delivery) -> str:
        try:
            exchange = await self._exchange()
        except DeliveryFailed:
            await self.close()
            raise
        except Exception as exc:  # refused, timed out, not AMQP, credentials refused: all read the same
            await self.close()
            detail = f"RabbitMQ ({redact_url(self.spec.url)}): {type(exc).__name__}: {exc}"
            raise DeliveryFailed("RabbitMQ: connect failed", answer=NO_ANSWER, detail=detail) from None
        try:
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
            raise DeliveryFailed(f"RabbitMQ: no confirm within {_CONFIRM_TIMEOUT_S}s", answer="not confirmed") from None
        except Exception as exc:  # aio-pika/aiormq raise many kinds; all mean "not confirmed"
            await self.close()
            # The broker's own words (a queue's name, say) go to the log only.
            raise DeliveryFailed(f"RabbitMQ: not confirmed ({type(exc).__name__})", answer="not confirmed",
                                 detail=f"RabbitMQ ({redact_url(self.spec.url)}): {type(exc).__name__}: {exc}"[:500],
                                 ) from None  # fmt: skip
        return "confirmed"

    async def close(self) -> None:
        connection, self.connection, self.channel, self.exchange = self.connection, None, None, None
        if connection is not None and not connection.is_closed:
            try:
                await asyncio.wait_for(connection.close(), 5)
            except Exception:  # closing a broken connection: nothing more to do
                pass

"""The destination object for a hook's definition."""

from __future__ import annotations

from flusher.hooks.delivery import Destination
from tracker.hooks import AmqpDestination, HttpDestination, KafkaDestination
from tracker.hooks import Destination as Spec


def open_destination(spec: Spec) -> Destination:
    # Imported here so that a worker with only HTTP hooks never loads the broker clients.
    if isinstance(spec, HttpDestination):
        from flusher.hooks.http_post import HttpPost

        return HttpPost(spec)
    if isinstance(spec, AmqpDestination):
        from flusher.hooks.rabbitmq import RabbitMQ

        return RabbitMQ(spec)
    if isinstance(spec, KafkaDestination):
        from flusher.hooks.kafka import Kafka

        return Kafka(spec)
    raise TypeError(f"unknown destination {spec!r}")

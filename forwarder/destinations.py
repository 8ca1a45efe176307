"""The destination object for a hook's definition."""

from __future__ import annotations

from forwarder.delivery import Destination
from tracker.domain.destination_policy import DestinationPolicy
from tracker.domain.hook_definitions import AmqpDestination, HttpDestination, KafkaDestination
from tracker.domain.hook_definitions import Destination as Spec


def open_destination(spec: Spec, policy: DestinationPolicy) -> Destination:
    """The destination's client; each checks the addresses it connects to against `policy`."""
    # Imported here so that a worker with only HTTP hooks never loads the broker clients.
    if isinstance(spec, HttpDestination):
        from forwarder.http_post import HttpPost

        return HttpPost(spec, policy)
    if isinstance(spec, AmqpDestination):
        from forwarder.rabbitmq import RabbitMQ

        return RabbitMQ(spec, policy)
    if isinstance(spec, KafkaDestination):
        from forwarder.kafka import Kafka

        return Kafka(spec, policy)
    raise TypeError(f"unknown destination {spec!r}")

"""Action hooks, as the API and the forwarder see them: definitions, filters, the event document.

A hook subscribes one destination (HTTP, RabbitMQ, Kafka) to committed events.
The flusher copies every batch it committed to the committed streams (one per
shard, same entry format as the event streams); each hook is a consumer group
on them, read by the `forwarder`. A hook's replays (tracker.domain.hook_replays)
and re-sent dead letters go to its own replay stream, which only its group reads.

The API writes definitions to Postgres and creates or destroys the hook's
groups (tracker.domain.hook_streams); the forwarder reads the definitions and
delivers. Nothing here imports either side.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from tracker.contract.events import CHANNELS, KINDS, Event
from tracker.domain.destination_policy import DestinationPolicy

# -- definitions ------------------------------------------------------------------------------

Kind = Literal[tuple(sorted(KINDS))]  # type: ignore[valid-type]
Channel = Literal[tuple(sorted(CHANNELS))]  # type: ignore[valid-type]
HookState = Literal["active", "paused", "failing"]
FieldName = Annotated[str, Meta(pattern="^[a-z][a-z0-9_]{0,62}$")]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class HookFilter(_Strict):
    """Which events a hook gets. An empty or absent list lets everything through; lists AND together.

    `profile_fields`: custom profile fields that must equal these values (events of anonymous or
    unknown profiles never match a non-empty one).
    """

    kinds: list[Kind] | None = None
    channels: list[Channel] | None = None
    message_ids: list[Annotated[int, Meta(ge=0)]] | None = None
    resource_ids: list[Annotated[int, Meta(ge=1)]] | None = None
    profile_fields: dict[FieldName, str | int | float | bool] | None = None

    @property
    def needs_resources(self) -> bool:
        return bool(self.resource_ids)


def compile_filter(spec: HookFilter) -> Callable[[Event, dict[int, int | None]], bool]:
    """A fast predicate: (event, message id -> resource id) -> matches, without the profile fields."""
    kinds = frozenset(spec.kinds or ())
    channels = frozenset(spec.channels or ())
    messages = frozenset(spec.message_ids or ())
    resources = frozenset(spec.resource_ids or ())

    def matches(event: Event, resource_of: dict[int, int | None]) -> bool:
        return (
            (not kinds or event.kind in kinds)
            and (not channels or event.channel in channels)
            and (not messages or event.message_id in messages)
            and (not resources or resource_of.get(event.message_id) in resources)
        )

    return matches


class HttpDestination(_Strict, tag="http", tag_field="type"):
    """POST `{"batch_id", "hook_id", "events": [...]}`; 2xx acknowledges, anything else is retried.

    With a `secret`, `X-Tracker-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` and
    `X-Tracker-Timestamp` (Unix seconds) come with every request.
    """

    url: Annotated[str, Meta(pattern="^https?://[^/?#\\s]+", max_length=2000)]
    secret: Annotated[str, Meta(min_length=16, max_length=500)] | None = None
    headers: dict[Annotated[str, Meta(pattern="^[A-Za-z0-9-]{1,100}$")], str] = {}
    timeout_s: Annotated[float, Meta(gt=0, le=300)] = 10.0
    max_events: Annotated[int, Meta(ge=1, le=10_000)] = 500


class AmqpDestination(_Strict, tag="amqp", tag_field="type"):
    """One persistent message per event, confirmed by the broker.

    Without `exchange`, to the queue `queue` through the default exchange; with one, to that
    exchange with `routing_key` (a template over the event: `{kind}`, `{channel}`, `{message_id}`,
    `{profile_id}`). Credentials go in the `url` (`amqp://user:password@host/vhost`).
    """

    url: Annotated[str, Meta(pattern="^amqps?://", max_length=2000)]
    queue: Annotated[str, Meta(max_length=255)] = ""
    exchange: Annotated[str, Meta(max_length=255)] = ""
    routing_key: Annotated[str, Meta(max_length=255)] = "event.{kind}.{channel}"
    max_events: Annotated[int, Meta(ge=1, le=10_000)] = 500


class KafkaDestination(_Strict, tag="kafka", tag_field="type"):
    """One record per event to `topic`, keyed by the profile id (per-profile order), acks=all."""

    bootstrap_servers: Annotated[str, Meta(min_length=3, max_length=2000)]
    topic: Annotated[str, Meta(pattern="^[A-Za-z0-9._-]{1,249}$")]
    # The idempotent producer needs broker support (InitProducerId); turn it off for brokers without.
    idempotent: bool = True
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_username: str | None = None
    sasl_password: str | None = None
    max_events: Annotated[int, Meta(ge=1, le=10_000)] = 500


Destination = HttpDestination | AmqpDestination | KafkaDestination
decode_destination = msgspec.json.Decoder(Destination).decode
decode_filter = msgspec.json.Decoder(HookFilter).decode
encode_json = msgspec.json.Encoder().encode


# Headers the HTTP client sets from the URL and the body: a hook setting them could aim the
# request at another virtual host than the checked one, or split it.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "te", "upgrade"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "amqp": 5672, "amqps": 5671}


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or a bare host -> (host without brackets, port); ValueError when malformed."""
    parts = urlsplit("//" + text.strip())
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in {text!r}")
    return host, parts.port or default_port


def destination_hosts(destination: Destination) -> list[tuple[str, str, int]]:
    """(field, host, port) of every place the destination connects to first; ValueError when malformed."""
    if isinstance(destination, KafkaDestination):
        servers = [item for item in destination.bootstrap_servers.split(",") if item.strip()]
        if not servers:
            raise ValueError("no bootstrap server")
        return [("bootstrap_servers", *split_host_port(item, 9092)) for item in servers]
    parts = urlsplit(destination.url)
    if not parts.hostname:
        raise ValueError(f"no host in {destination.url!r}")
    return [("url", parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme])]


def check_reach(destination: Destination, policy: DestinationPolicy) -> str:
    """'' when the destination may be reached, else a sentence that starts with the field (no DNS: see policy)."""
    try:
        hosts = destination_hosts(destination)
    except ValueError as exc:
        return f"destination: {exc}"
    for field_name, host, _port in hosts:
        problem = policy.check_host(host)
        if problem:
            return (f"destination.{field_name}: {problem}; hooks deliver to public addresses only "
                    "(an operator may allow internal ones with TRACKER_HOOKS_ALLOWED_DESTINATIONS)")  # fmt: skip
    return ""


def check_destination(destination: Destination) -> str:
    """What is wrong with a destination beyond its types ('' when nothing)."""
    if isinstance(destination, HttpDestination):
        for name in destination.headers:
            if name.lower() in RESERVED_HEADERS:
                return f"destination.headers.{name}: set by the forwarder from the URL and the body, not by a hook"
    if isinstance(destination, AmqpDestination):
        if not destination.exchange and not destination.queue:
            return "an amqp destination needs a queue (default exchange) or an exchange"
        try:
            destination.routing_key.format(kind="k", channel="c", message_id=1, profile_id=1)
        except (KeyError, IndexError, ValueError) as exc:
            return f"routing_key: unknown placeholder or bad template ({exc})"
    if isinstance(destination, KafkaDestination) and destination.security_protocol.startswith("SASL"):
        if not destination.sasl_username or not destination.sasl_password:
            return "SASL needs sasl_username and sasl_password"
    return ""


def secret_hint(secret: str | None) -> str | None:
    # Whether it is set, nothing of the value: API keys that may only read see these views too.
    return "set" if secret else None


def shown_destination(config: dict[str, Any]) -> dict[str, Any]:
    """A stored view (the `config` column) as the API shows it; views stored with a secret's
    last characters (before they were hidden) show "set" like the others."""
    shown = dict(config)
    for name in ("secret", "sasl_password"):
        if name in shown:
            shown[name] = secret_hint(shown[name])
    if "headers" in shown:
        shown["headers"] = dict.fromkeys(shown["headers"], "set")
    return shown


def public_view(destination: Destination) -> dict[str, Any]:
    """The destination as the API shows it: no secret, header values and passwords hidden."""
    from tracker.config import redact_url

    if isinstance(destination, HttpDestination):
        return {
            "type": "http",
            "url": destination.url,
            "secret": secret_hint(destination.secret),
            "headers": dict.fromkeys(destination.headers, "set"),
            "timeout_s": destination.timeout_s,
            "max_events": destination.max_events,
        }
    if isinstance(destination, AmqpDestination):
        return {
            "type": "amqp",
            "url": redact_url(destination.url),
            "queue": destination.queue,
            "exchange": destination.exchange,
            "routing_key": destination.routing_key,
            "max_events": destination.max_events,
        }
    return {
        "type": "kafka",
        "bootstrap_servers": destination.bootstrap_servers,
        "topic": destination.topic,
        "idempotent": destination.idempotent,
        "security_protocol": destination.security_protocol,
        "sasl_username": destination.sasl_username,
        "sasl_password": secret_hint(destination.sasl_password),
        "max_events": destination.max_events,
    }


# -- what destinations receive ----------------------------------------------------------------


def event_document(event: Event) -> dict[str, Any]:
    """One event as JSON: `id` (a UUID, the idempotency key) and the event's facts."""
    return {
        "id": str(uuid.UUID(bytes=event.id)),
        "kind": event.kind,
        "channel": event.channel,
        "message_id": event.message_id,
        "profile_id": event.profile_id,
        "time": dt.datetime.fromtimestamp(event.ts_us / 1e6, dt.UTC).isoformat().replace("+00:00", "Z"),
        "ts_us": event.ts_us,
        "link_version": event.link_version,
        "link_index": event.link_index,
        "ua_class": event.ua_class,
        "ua_family": event.ua_family,
        "ip_prefix": event.ip_prefix,
        "data": event.data,
        # Who did it, as the flusher judged it: opens and clicks are "human" or "machine" with the reasons
        # (clicks are delivered after their settle window, with the final verdict); other kinds "unknown".
        "verdict": event.verdict or "unknown",
        "reasons": list(event.reasons),
    }


def sample_event(ids: Any, message_id: int = 0, profile_id: int = 0) -> Event:
    """What a test delivery sends: a `site_action` marked as a test (`data.test` is true)."""
    now_us = dt.datetime.now(dt.UTC).timestamp() * 1e6
    return Event(ids.new(), "site_action", "site", message_id, profile_id, int(now_us), 0, -1, "test", "",
                 {"test": True, "action": "hook_test"})  # fmt: skip


class TestRequest(msgspec.Struct):
    """API -> worker: deliver a sample event through hook `hook_id` now, answer at `reply_key`."""

    request_id: str
    hook_id: int
    reply_key: str
    deadline: float = 0.0  # Unix time the API stops waiting: a request found later is dropped (0: none)


class TestReply(msgspec.Struct):
    ok: bool
    answer: str
    took_ms: float

"""The action-hook API's wire formats (edge/api/hooks.py): msgspec Structs, also OpenAPI components.

Destinations and filters come from tracker.domain.hook_definitions (shared with the
forwarder); the views here show destinations without their secrets.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from edge.api.schemas import Id, Input, Moment
from tracker.domain.hook_definitions import AmqpDestination, HookFilter, HttpDestination, KafkaDestination

HookDestination = HttpDestination | AmqpDestination | KafkaDestination


class HookIn(Input):
    """A new hook. It receives events committed from (about) now on; secrets are never shown again."""

    name: Annotated[str, Meta(min_length=1, max_length=200)]
    destination: HookDestination
    filter: HookFilter = msgspec.field(default_factory=HookFilter)
    state: Literal["active", "paused"] = "active"


class HookPatch(Input):
    """A partial update. A destination replaces the old one; a left-out secret (same URL) is kept."""

    name: Annotated[str, Meta(min_length=1, max_length=200)] | UnsetType = UNSET
    destination: HookDestination | UnsetType = UNSET
    filter: HookFilter | UnsetType = UNSET


class HttpDestinationView(msgspec.Struct, tag="http", tag_field="type"):
    url: str
    secret: str | None  # "set, ends in abcd" or null
    headers: dict[str, str]  # names only: every value shows as "set"
    timeout_s: float
    max_events: int


class AmqpDestinationView(msgspec.Struct, tag="amqp", tag_field="type"):
    url: str  # password shown as ***
    queue: str
    exchange: str
    routing_key: str
    max_events: int


class KafkaDestinationView(msgspec.Struct, tag="kafka", tag_field="type"):
    bootstrap_servers: str
    topic: str
    idempotent: bool
    security_protocol: str
    sasl_username: str | None
    sasl_password: str | None  # "set, ends in abcd" or null
    max_events: int


class Hook(msgspec.Struct):
    """A hook and how it is doing. `backlog_entries`: committed-stream entries (up to
    TRACKER_HOOKS_ENTRY_MAX_EVENTS events each) not yet acknowledged by it, pending or unread."""

    id: int
    name: str
    state: Literal["active", "paused", "failing"]
    destination: HttpDestinationView | AmqpDestinationView | KafkaDestinationView
    filter: HookFilter
    backlog_entries: int
    dead_letter_entries: int
    consecutive_failures: int
    last_error: str | None
    last_error_at: datetime.datetime | None
    last_success_at: datetime.datetime | None
    delivered: int
    dead_lettered: int
    created_at: datetime.datetime
    updated_at: datetime.datetime


class HookList(msgspec.Struct):
    hooks: list[Hook]


class HookTestResult(msgspec.Struct):
    """What the destination answered to one sample event (`data.test` true), sent by the hooks worker."""

    ok: bool
    answer: str
    took_ms: float


class ReplayIn(Input):
    """Re-send stored events to this hook only: those of [since, until), or of one message (both: AND)."""

    since: Moment | None = None
    until: Moment | None = None
    message_id: Id | None = None


ReplayStatus = Literal["queued", "running", "done", "failed"]


class Replay(msgspec.Struct):
    """A replay job: a hooks worker pages the events onto the hook's replay stream, then it is done."""

    id: int
    hook_id: int
    status: ReplayStatus
    since: datetime.datetime
    until: datetime.datetime
    message_id: int | None
    max_events: int  # TRACKER_HOOKS_REPLAY_MAX_EVENTS when it was asked for
    queued: int  # events put on the hook's replay stream so far (its filter still applies)
    truncated: bool  # stopped at max_events: ask again with since = resume_from for the rest
    resume_from: datetime.datetime | None  # when truncated: the time of the last event queued
    error: str | None  # why it failed, or the last failure it is retrying after
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None


class ReplayList(msgspec.Struct):
    replays: list[Replay]  # newest first, at most 50


class DeadLetter(msgspec.Struct):
    id: str
    at: float  # Unix time it was dead-lettered
    error: str
    attempts: int
    events: int
    event_ids: list[str]  # the first 20


class DeadLetterList(msgspec.Struct):
    dead_letters: list[DeadLetter]


class DeadLettersRequeued(msgspec.Struct):
    requeued: int  # events moved back to the hook's replay stream


# Every Struct that appears in the schema (after edge.api.schemas.COMPONENTS).
COMPONENTS: tuple[type, ...] = (
    HookIn, HookPatch, Hook, HookList, HookTestResult, ReplayIn, Replay, ReplayList, DeadLetterList,
    DeadLettersRequeued,
)  # fmt: skip

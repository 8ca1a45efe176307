"""The API's wire formats: msgspec Structs, which also generate the OpenAPI components.

Inputs forbid unknown fields, so a typo is a 422 instead of a silently ignored value.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

Id = Annotated[int, Meta(ge=1, le=2**63 - 1)]
FieldType = Literal["string", "number", "boolean", "date", "enum"]
ResourceChannel = Literal["email", "sms", "web_push", "app_push", "site"]
MessageChannel = Literal["email", "sms", "web_push", "app_push"]
EmailStatus = Literal["active", "hard_bounced", "complained"]
PhoneStatus = Literal["active", "undelivered", "complained"]


class _In(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class ErrorBody(msgspec.Struct):
    """Every error: a machine-readable code and a sentence for people."""

    error: ErrorDetail


class ProfileFieldIn(_In):
    name: Annotated[str, Meta(pattern="^[a-z][a-z0-9_]{0,62}$")]
    type: FieldType
    enum_values: list[str] | None = None


class ProfileField(msgspec.Struct):
    name: str
    type: str
    builtin: bool
    enum_values: list[str] | None = None


class ProfileFieldList(msgspec.Struct):
    fields: list[ProfileField]


class ProfileIn(_In):
    """A new profile. `fields` holds declared custom fields only."""

    external_id: str | None = None
    email: str | None = None
    phone: str | None = None
    email_status: EmailStatus | None = None
    phone_status: PhoneStatus | None = None
    fields: dict[str, Any] = {}


class ProfilePatch(_In):
    """A partial update: absent keys stay; null clears email/phone/external_id or removes a custom field."""

    external_id: str | UnsetType | None = UNSET
    email: str | UnsetType | None = UNSET
    phone: str | UnsetType | None = UNSET
    email_status: EmailStatus | UnsetType = UNSET
    phone_status: PhoneStatus | UnsetType = UNSET
    fields: dict[str, Any] | UnsetType = UNSET


class Profile(msgspec.Struct):
    id: int
    external_id: str | None
    email: str | None
    phone: str | None
    email_status: str
    phone_status: str
    fields: dict[str, Any]
    created_at: datetime.datetime
    updated_at: datetime.datetime


class RowError(msgspec.Struct):
    row: int  # 1-based data row (the CSV header is not counted)
    code: str
    message: str


class ImportSummary(msgspec.Struct):
    """Rows not listed in `errors` were applied (up to `errors_limit` errors are listed)."""

    rows: int
    applied: int
    created: int
    updated: int
    failed: int
    errors: list[RowError]
    errors_truncated: bool


class ImportStopped(msgspec.Struct):
    """An import whose body broke off part way: the error, and what happened to the rows read."""

    error: ErrorDetail
    summary: ImportSummary


class ResourceIn(_In):
    name: Annotated[str, Meta(min_length=1, max_length=500)]
    channel: ResourceChannel


class Resource(msgspec.Struct):
    id: int
    name: str
    channel: str
    created_at: datetime.datetime


class ResourceList(msgspec.Struct):
    resources: list[Resource]


class SubscribeIn(_In):
    resource_id: Id
    double_opt_in: bool = False


class Subscription(msgspec.Struct):
    profile_id: int
    resource_id: int
    resource_name: str
    channel: str
    status: Literal["pending", "subscribed", "unsubscribed"]
    created_at: datetime.datetime
    subscribed_at: datetime.datetime | None
    confirmed_at: datetime.datetime | None
    unsubscribed_at: datetime.datetime | None
    updated_at: datetime.datetime


class SubscriptionList(msgspec.Struct):
    subscriptions: list[Subscription]


class Subscriber(msgspec.Struct):
    profile_id: int
    external_id: str | None
    email: str | None
    phone: str | None
    status: Literal["pending", "subscribed", "unsubscribed"]
    subscribed_at: datetime.datetime | None
    confirmed_at: datetime.datetime | None
    unsubscribed_at: datetime.datetime | None
    email_status: Literal["active", "hard_bounced", "complained"]
    phone_status: Literal["active", "undelivered", "complained"]


class SubscriberPage(msgspec.Struct):
    """One page, in profile id order."""

    subscribers: list[Subscriber]
    next_after: int | None  # pass as ?after= for the next page; null: this was the last one


class MessageIn(_In):
    channel: MessageChannel
    content: str
    name: Annotated[str, Meta(max_length=500)] = ""
    resource_id: Id | None = None


class VersionIn(_In):
    content: str


class LinkOut(msgspec.Struct):
    index: int
    url: str
    attributes: dict[str, str]


class Message(msgspec.Struct):
    id: int
    channel: str
    name: str
    resource_id: int | None
    version: int
    links: list[LinkOut]


class KindCounter(msgspec.Struct):
    total: int
    uniques: int
    first_at: datetime.datetime
    last_at: datetime.datetime


class MessageStats(msgspec.Struct):
    """Totals and uniques (distinct profiles) per event kind, as the flusher keeps them."""

    message_id: int
    counters: dict[str, KindCounter]


class RenderIn(_In):
    profile_ids: Annotated[list[Id], Meta(min_length=1)]
    version: Id | None = None


class RenderedRecipient(msgspec.Struct):
    """Email: body (HTML) and headers. SMS: body (text). Push: body (content as registered) and push_urls."""

    profile_id: int
    body: str | None
    headers: dict[str, str] | None
    push_urls: dict[str, str] | None


class RenderOut(msgspec.Struct):
    message_id: int
    version: int
    channel: str
    recipients: list[RenderedRecipient]
    unknown_profile_ids: list[int]


# Every Struct that appears in the schema, for msgspec.json.schema_components.
COMPONENTS: tuple[type, ...] = (
    ErrorBody, ProfileFieldIn, ProfileField, ProfileFieldList, ProfileIn, ProfilePatch, Profile, ImportSummary,
    ImportStopped, ResourceIn, Resource, ResourceList, SubscribeIn, Subscription, SubscriptionList, Subscriber,
    SubscriberPage, MessageIn,
    VersionIn, Message, MessageStats, RenderIn, RenderOut,
)  # fmt: skip


# -- action hooks (edge/api/hooks.py; definitions shared with the worker in tracker.domain.hook_definitions) --
from tracker.domain.hook_definitions import AmqpDestination, HookFilter, HttpDestination, KafkaDestination  # noqa: E402

HookDestination = HttpDestination | AmqpDestination | KafkaDestination


class HookIn(_In):
    """A new hook. It receives events committed from (about) now on; secrets are never shown again."""

    name: Annotated[str, Meta(min_length=1, max_length=200)]
    destination: HookDestination
    filter: HookFilter = msgspec.field(default_factory=HookFilter)
    state: Literal["active", "paused"] = "active"


class HookPatch(_In):
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


class ReplayIn(_In):
    """Re-send stored events to this hook only: those of [since, until), or of one message (both: AND)."""

    since: datetime.datetime | None = None
    until: datetime.datetime | None = None
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


COMPONENTS = (
    *COMPONENTS, HookIn, HookPatch, Hook, HookList, HookTestResult, ReplayIn, Replay, ReplayList, DeadLetterList,
    DeadLettersRequeued,
)  # fmt: skip

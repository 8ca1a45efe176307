"""The API's wire formats: msgspec Structs, which also generate the OpenAPI components.

Inputs forbid unknown fields, so a typo is a 422 instead of a silently ignored value.
Profiles, resources, subscriptions and messages are here; action hooks in
`edge.api.hook_schemas`. `edge.api.openapi` lists both modules' COMPONENTS.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from tracker.contract.numbers import MAX_ID, MAX_VERSION
from tracker.contract.tokens import EVENT_CHANNELS, MESSAGE_CHANNELS

Id = Annotated[int, Meta(ge=1, le=MAX_ID)]
Version = Annotated[int, Meta(ge=1, le=MAX_VERSION)]  # link-table versions are Postgres integers
# Postgres text refuses NUL: said in the schema (and refused with a 422 naming the field), not a 500.
NO_NUL = "^[^\\x00]*$"
Text = Annotated[str, Meta(pattern=NO_NUL)]
# Checked by tracker.domain.profile_fields with their own messages; the patterns only document them.
Email = Annotated[str, Meta(extra_json_schema={"pattern": "^[^@\\s\\x00]{1,64}@[^@\\s\\x00]+\\.[^@\\s\\x00]+$",
                                               "maxLength": 254})]
Phone = Annotated[str, Meta(extra_json_schema={"pattern": "^\\+[1-9][0-9]{6,14}$"})]
# A time in a request body: RFC 3339 with its offset (msgspec reads it; a time without a zone is refused).
Moment = Annotated[datetime.datetime, Meta(tz=True, extra_json_schema={"format": "date-time"})]
# As tracker.domain.profile_fields.check_external_id reads it: 1 to 200 characters.
ExternalId = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
FieldType = Literal["string", "number", "boolean", "date", "enum"]
# Channel names come from the contract (tracker.contract.tokens.Channel); a Literal made from them at run time.
ResourceChannel = Literal[EVENT_CHANNELS]  # type: ignore[valid-type]
MessageChannel = Literal[MESSAGE_CHANNELS]  # type: ignore[valid-type]
EmailStatus = Literal["active", "hard_bounced", "complained"]
PhoneStatus = Literal["active", "undelivered", "complained"]
# What a 422 says instead of the regex it failed (edge.api._errors; the patterns are here and in
# tracker.domain.hook_definitions). A pattern missing here is shown as msgspec gives it; tests/edge/test_api_errors.py
# fails when an input's pattern has no words.
PATTERN_WORDS = {
    NO_NUL: "text must not contain NUL (\\u0000) characters",
    "^[a-z][a-z0-9_]{0,62}$": "field names are 1 to 63 lower-case letters, digits and underscores,"
    " starting with a letter",
    "^https?://[^/?#\\s]+": "the URL must start with http:// or https:// and a host name",
    "^amqps?://": "the URL must start with amqp:// or amqps://",
    "^[A-Za-z0-9-]{1,100}$": "header names are 1 to 100 letters, digits and hyphens",
    "^[A-Za-z0-9._-]{1,249}$": "topic names are 1 to 249 letters, digits, dots, underscores and hyphens",
}


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The base of every request body: an unknown field is a 422."""


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class ErrorBody(msgspec.Struct):
    """Every error: a machine-readable code and a sentence for people."""

    error: ErrorDetail


class ProfileFieldIn(Input):
    name: Annotated[str, Meta(pattern="^[a-z][a-z0-9_]{0,62}$")]
    type: FieldType
    enum_values: Annotated[list[Text], Meta(min_length=1)] | None = None


class ProfileField(msgspec.Struct):
    name: str
    type: str
    builtin: bool
    enum_values: list[str] | None = None


class ProfileFieldList(msgspec.Struct):
    fields: list[ProfileField]


class ProfileIn(Input):
    """A new profile. `fields` holds declared custom fields only."""

    external_id: ExternalId | None = None
    email: Email | None = None
    phone: Phone | None = None
    email_status: EmailStatus | None = None
    phone_status: PhoneStatus | None = None
    fields: dict[str, Any] = {}


class ProfilePatch(Input):
    """A partial update: absent keys stay; null clears email/phone/external_id or removes a custom field."""

    external_id: ExternalId | UnsetType | None = UNSET
    email: Email | UnsetType | None = UNSET
    phone: Phone | UnsetType | None = UNSET
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


class ResourceIn(Input):
    name: Annotated[str, Meta(min_length=1, max_length=500, pattern=NO_NUL)]
    channel: ResourceChannel


class Resource(msgspec.Struct):
    id: int
    name: str
    channel: str
    created_at: datetime.datetime


class ResourceList(msgspec.Struct):
    resources: list[Resource]


class SubscribeIn(Input):
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


class MessageIn(Input):
    channel: MessageChannel
    content: Text
    name: Annotated[str, Meta(max_length=500, pattern=NO_NUL)] = ""
    resource_id: Id | None = None
    # Email: one invisible link only machines follow (the verdict's honeypot rule); kept for every version.
    honeypot: bool = False


class VersionIn(Input):
    content: Text


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
    # Split by verdict: opens and clicks are judged human or machine; the rest of `total` is unknown
    # (events of other kinds, and those no rule could decide).
    human: int = 0
    human_uniques: int = 0
    machine: int = 0
    machine_uniques: int = 0
    # verdict -> reason -> events it helped decide (e.g. {"machine": {"burst": 3, "too_fast": 1}})
    reasons: dict[str, dict[str, int]] = {}


class MessageStats(msgspec.Struct):
    """Totals and uniques (distinct profiles) per event kind, as the flusher keeps them, split by verdict."""

    message_id: int
    counters: dict[str, KindCounter]


class RenderIn(Input):
    profile_ids: Annotated[list[Id], Meta(min_length=1)]
    version: Version | None = None


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


# -- analytics (edge/api/analytics*.py): lists, message reports, click maps, cohorts, lifetimes --
class MessageSummary(msgspec.Struct):
    id: int
    channel: str
    name: str
    resource_id: int | None
    current_version: int
    created_at: datetime.datetime


class MessagePage(msgspec.Struct):
    """One page, in message id order."""

    messages: list[MessageSummary]
    next_after: int | None  # pass as ?after= for the next page; null: this was the last one


class ProfilePage(msgspec.Struct):
    """One page of the profiles matching every filter, in profile id order."""

    profiles: list[Profile]
    next_after: int | None


class FunnelStage(msgspec.Struct):
    name: str
    total: int
    uniques: int
    human: int
    human_uniques: int
    machine: int
    machine_uniques: int
    rate: float | None  # uniques over delivered uniques; null when nothing was delivered


class SeriesPoint(msgspec.Struct):
    """Events per stage in one hour or day starting at `at` (UTC)."""

    at: datetime.datetime
    sent: int
    delivered: int
    undelivered: int
    soft_bounce: int
    hard_bounce: int
    complained: int
    opened: int
    read: int
    clicked: int
    unsubscribed: int
    confirmed: int
    human_opened: int
    human_clicked: int


class MessageReport(msgspec.Struct):
    """A message's funnel (all time), dwell quantiles of reads (seconds) and a time series over [from, to)."""

    message_id: int
    channel: str
    name: str
    stages: list[FunnelStage]
    dwell_s: dict[str, float | None]  # p50, p90, p99
    interval: Literal["hour", "day"]
    start: datetime.datetime = msgspec.field(name="from")
    end: datetime.datetime = msgspec.field(name="to")
    series: list[SeriesPoint] = []


class LinkClicks(msgspec.Struct):
    index: int
    url: str
    text: str
    total: int
    uniques: int
    human: int
    share: float | None  # of this version's clicks


class UrlChange(msgspec.Struct):
    index: int
    old_url: str
    new_url: str


class LinkVersion(msgspec.Struct):
    version: int
    created_at: datetime.datetime  # when it became the current version
    links: int
    added: list[int]
    removed: list[int]
    changed: list[UrlChange]


class ClickReport(msgspec.Struct):
    message_id: int
    version: int
    current_version: int
    total: int
    links: list[LinkClicks]
    versions: list[LinkVersion]


class Cohort(msgspec.Struct):
    start: datetime.datetime
    profiles: int
    active: list[int]  # profiles active (opened, read or clicked) in each period from the cohort's own on
    share: list[float]


class CohortReport(msgspec.Struct):
    resource_id: int
    period: Literal["week", "month"]
    start: datetime.datetime = msgspec.field(name="from")
    end: datetime.datetime = msgspec.field(name="to")
    cohorts: list[Cohort] = []
    as_of: datetime.datetime | None = None  # exact as of this time (a snapshot's, or the request's)


class HistogramBucket(msgspec.Struct):
    low: float  # inclusive
    high: float  # exclusive
    profiles: int


class Measure(msgspec.Struct):
    p50: float | None
    p90: float | None
    p99: float | None
    histogram: list[HistogramBucket]


class LifetimeReport(msgspec.Struct):
    """Per profile of the list: lifetime_days (first to last activity), messages received, opened, clicked."""

    resource_id: int
    profiles: int
    ever_active: int
    measures: dict[str, Measure]
    as_of: datetime.datetime | None = None  # exact as of this time (the snapshot's)


class TimelineEvent(msgspec.Struct):
    id: str
    ts: datetime.datetime
    kind: str
    channel: str
    message_id: int
    link_version: int
    link_index: int
    verdict: str
    data: dict[str, Any] | None


class Timeline(msgspec.Struct):
    """A profile's events, newest first."""

    profile_id: int
    events: list[TimelineEvent]
    next_before: str | None  # pass as ?before= for the next page


class ReportLinkIn(Input):
    message_id: Id
    page: Literal["funnel", "clickmap"] = "funnel"
    version: Version | None = None


class ReportLinkOut(msgspec.Struct):
    """A signed URL of a report page for people; it works until expires_at, no API key needed."""

    url: str
    expires_at: datetime.datetime


COMPONENTS = (
    *COMPONENTS, MessagePage, ProfilePage, MessageReport, ClickReport, CohortReport, LifetimeReport, Timeline,
    ReportLinkIn, ReportLinkOut,
)  # fmt: skip

"""The authenticated API under `/api/v1`: profiles, subscriptions, messages and their rendering.

`build_api(state)` returns a Starlette app for the edge to mount; every route
is declared once in `ENDPOINTS`, which also produces `/api/v1/openapi.json`.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge.api import analytics, analytics_lists, hooks, messages, profile_import, profiles, schemas, subscriptions
from edge.api._http import ApiContext, Endpoint, http_exception, json_response, wrap
from edge.api.hook_schemas import (
    DeadLetterList,
    DeadLettersRequeued,
    Hook,
    HookIn,
    HookList,
    HookPatch,
    HookTestResult,
    Replay,
    ReplayIn,
    ReplayList,
)
from edge.api.openapi import build_openapi
from edge.api.schemas import (
    ClickReport,
    CohortReport,
    ImportSummary,
    LifetimeReport,
    Message,
    MessageIn,
    MessagePage,
    MessageReport,
    MessageStats,
    Profile,
    ProfileField,
    ProfileFieldIn,
    ProfileFieldList,
    ProfileIn,
    ProfilePage,
    ProfilePatch,
    RenderIn,
    RenderOut,
    ReportLinkIn,
    ReportLinkOut,
    Resource,
    ResourceIn,
    ResourceList,
    SubscribeIn,
    SubscriberPage,
    Subscription,
    SubscriptionList,
    Timeline,
    VersionIn,
)
from edge.routing import methods_route
from edge.state import EdgeState
from tracker.contract.numbers import MAX_ID, MAX_VERSION
from tracker.domain.analytics import listing
from tracker.domain.analytics.listing import CHANNELS

_BODY = (400, 413, 422)
# Numbers in a query are integers to the schema, with the bounds the handlers read them with
# (tracker.contract.numbers.parse_int: ASCII digits, one spelling).
_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000}
_AFTER = ("after", "the next_after of the previous page (default 0)", {"type": "integer", "minimum": 0,
                                                                       "maximum": MAX_ID})
_PAGE = (_AFTER, ("limit", "1 to 1000 (default 100)", _LIMIT))  # fmt: skip
ENDPOINTS = [
    Endpoint("GET", "/profile-fields", profiles.list_fields, "read", "List built-in and custom profile fields",
             response=ProfileFieldList),
    Endpoint("POST", "/profile-fields", profiles.create_field, "write", "Declare a custom profile field",
             ProfileFieldIn, ProfileField, 201, (*_BODY, 409)),
    Endpoint("POST", "/profiles", profiles.create_profile, "write", "Create a profile",
             ProfileIn, Profile, 201, (*_BODY, 409)),
    Endpoint("GET", "/profiles/lookup", profiles.lookup_profile, "read",
             "Find a profile by exactly one of email, phone or external_id", response=Profile, errors=(400, 404, 422),
             query=(("email", "email address", schemas.Email.__metadata__[0].extra_json_schema),
                    ("phone", "E.164 phone number", schemas.Phone.__metadata__[0].extra_json_schema),
                    ("external_id", "your id", {"maxLength": 200}))),
    Endpoint("POST", "/profiles/import", profile_import.import_profiles, "write",
             "Upsert profiles from JSON lines or CSV (streamed; per-row errors and a summary)",
             response=ImportSummary, errors=(400, 413, 415, 422),
             query=(("format", "csv or jsonl, when the Content-Type does not say", {"enum": ["csv", "jsonl"]}),),
             request_media=("text/csv", "application/x-ndjson")),
    Endpoint("GET", "/profiles/{profile_id}", profiles.get_profile, "read", "Read a profile",
             response=Profile, errors=(404,)),
    Endpoint("PATCH", "/profiles/{profile_id}", profiles.update_profile, "write",
             "Change some of a profile's values (null clears or removes)", ProfilePatch, Profile, 200,
             (*_BODY, 404, 409)),
    Endpoint("DELETE", "/profiles/{profile_id}", profiles.delete_profile, "write", "Delete a profile",
             status=204, errors=(404,)),
    Endpoint("GET", "/profiles/{profile_id}/subscriptions", subscriptions.list_subscriptions, "read",
             "A profile's subscriptions with status and times", response=SubscriptionList, errors=(404,)),
    Endpoint("POST", "/profiles/{profile_id}/subscriptions", subscriptions.subscribe, "write",
             "Subscribe a profile to a resource (pending until confirmed with double_opt_in)",
             SubscribeIn, Subscription, 200, (*_BODY, 404)),
    Endpoint("DELETE", "/profiles/{profile_id}/subscriptions/{resource_id}", subscriptions.unsubscribe, "write",
             "Unsubscribe a profile from a resource", response=Subscription, errors=(404,)),
    Endpoint("POST", "/profiles/{profile_id}/subscriptions/{resource_id}/confirm", subscriptions.confirm, "write",
             "Confirm a pending double opt-in", response=Subscription, errors=(404, 409)),
    Endpoint("GET", "/resources", subscriptions.list_resources, "read", "List resources (subscription lists)",
             response=ResourceList),
    Endpoint("POST", "/resources", subscriptions.create_resource, "write", "Create a resource",
             ResourceIn, Resource, 201, _BODY),
    Endpoint("GET", "/resources/{resource_id}/subscribers", subscriptions.list_subscribers, "read",
             "A list's profiles with a status (default subscribed), a page at a time; sendable=true keeps only"
             " working addresses for the list's channel (email: active; sms: not complained)",
             response=SubscriberPage, errors=(404, 422),
             query=(("status", "pending, subscribed (default) or unsubscribed",
                     {"enum": ["pending", "subscribed", "unsubscribed"]}),
                    ("sendable", "true (or 1, yes): only profiles a send may go to",
                     {"enum": subscriptions.FLAG_VALUES}),
                    _AFTER, ("limit", "1 to 1000 (default 500)", _LIMIT))),
    Endpoint("GET", "/resources/{resource_id}", subscriptions.get_resource, "read", "Read a resource",
             response=Resource, errors=(404,)),
    Endpoint("POST", "/messages", messages.create_message, "write",
             "Register a message: its links become link-table version 1", MessageIn, Message, 201, _BODY),
    Endpoint("GET", "/messages/{message_id}", messages.get_message, "read",
             "A message and the links of its current version", response=Message, errors=(404,)),
    Endpoint("POST", "/messages/{message_id}/versions", messages.create_version, "write",
             "Register new content for a message (a new link-table version)", VersionIn, Message, 201,
             (*_BODY, 404)),
    Endpoint("GET", "/messages/{message_id}/stats", messages.message_stats, "read",
             "Counters per event kind (totals and unique profiles)", response=MessageStats, errors=(404,)),
    Endpoint("POST", "/messages/{message_id}/render", messages.render, "write",
             "Tracked content for each recipient", RenderIn, RenderOut, 200, (*_BODY, 404)),
    # -- analytics (edge/api/analytics*.py): every report also as CSV with `Accept: text/csv` --
    Endpoint("GET", "/messages", analytics_lists.list_messages, "read",
             "List messages a page at a time (id order), by channel, creation time and name", response=MessagePage,
             errors=(422,), query=(("channel", "email, sms, web_push, app_push or site", {"enum": list(CHANNELS)}),
                                   ("created_from", "created at or after (ISO 8601)"),
                                   ("created_to", "created before (ISO 8601)"),
                                   ("name", "part of the name, any case", {"maxLength": 500}), *_PAGE)),
    Endpoint("GET", "/profiles", analytics_lists.list_profiles, "read",
             "List profiles matching every filter given, a page at a time (id order)", response=ProfilePage,
             errors=(422,), query=(("field", "name:value of a custom field; repeat for more"),
                                   ("resource", "subscribed to this resource", _ID),
                                   ("status", "with resource: pending, subscribed (default) or unsubscribed",
                                    {"enum": ["pending", "subscribed", "unsubscribed"]}),
                                   ("opened", "opened this message", _ID), ("clicked", "clicked in this message", _ID),
                                   ("active_since", "opened, read or clicked anything since (ISO 8601)"), *_PAGE)),
    Endpoint("GET", "/profiles/{profile_id}/events", analytics_lists.profile_events, "read",
             "A profile's events, newest first, a page at a time", response=Timeline, errors=(404, 422),
             query=(("before", "the next_before of the previous page", {"pattern": listing.CURSOR_PATTERN}),
                    ("kind", "only this event kind"),
                    ("limit", "1 to 1000 (default 100)", _LIMIT))),
    Endpoint("GET", "/messages/{message_id}/report", analytics.message_report, "read",
             "A message's funnel (totals, uniques, human/machine, rates over delivered), read dwell quantiles,"
             " and a time series by hour or day over [from, to)", response=MessageReport, errors=(404, 422),
             query=(("interval", "day (default) or hour (at most 31 days)", {"enum": ["hour", "day"]}),
                    ("from", "start (ISO 8601; default: the message's creation)"),
                    ("to", "end (ISO 8601; default: now)"))),
    Endpoint("GET", "/messages/{message_id}/clicks", analytics.message_clicks, "read",
             "Clicks per link of one link-table version (total, unique profiles, human, share) and the version"
             " history", response=ClickReport, errors=(404, 422),
             query=(("version", "link-table version (default: the current one)",
                     {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}),)),
    Endpoint("GET", "/reports/cohorts", analytics.cohort_report, "read",
             "A list's profiles grouped by when they subscribed, with the share active in each following period;"
             " over the default range served from a snapshot, exact as of its `as_of`",
             response=CohortReport, errors=(404, 422),
             query=(("resource", "the resource (subscription list) id", _ID),
                    ("period", "week (default) or month", {"enum": ["week", "month"]}),
                    ("from", "subscribed at or after (ISO 8601)"), ("to", "subscribed before (ISO 8601)")),
             required_query=("resource",)),
    Endpoint("GET", "/reports/lifetime", analytics.lifetime_report, "read",
             "Per-profile lifetime in a list (first to last action on the list's messages; of them, how many"
             " received, opened, clicked) as quantiles and histograms; served from a snapshot, exact as of its"
             " `as_of`", response=LifetimeReport, errors=(404, 422),
             query=(("resource", "the resource (subscription list) id", _ID),
                    ("status", "any (default), subscribed, unsubscribed or pending",
                     {"enum": ["any", "subscribed", "unsubscribed", "pending"]})), required_query=("resource",)),
    # `read`: the link shows a browser what the key may read already, for TRACKER_ANALYTICS_LINK_TTL_S, and
    # changes nothing stored; requiring `write` would hand reporting tools a key that can change messages.
    Endpoint("POST", "/report-links", analytics.create_report_link, "read",
             "A short-lived signed URL of a message's report page (funnel or click map) for a browser; needs only"
             " the read scope: it shows what the key may read and changes nothing",
             ReportLinkIn, ReportLinkOut, 201, (*_BODY, 404)),
    # -- action hooks (edge/api/hooks.py) --
    Endpoint("GET", "/hooks", hooks.list_hooks, "read", "List action hooks with state and backlog",
             response=HookList),
    Endpoint("POST", "/hooks", hooks.create_hook, "write",
             "Create an action hook (HTTP, RabbitMQ or Kafka); secrets are never shown again", HookIn, Hook, 201,
             (*_BODY, 503)),
    Endpoint("GET", "/hooks/{hook_id}", hooks.get_hook, "read", "Read a hook, its state and backlog",
             response=Hook, errors=(404,)),
    Endpoint("PATCH", "/hooks/{hook_id}", hooks.update_hook, "write",
             "Change a hook's name, destination or filter (a left-out secret is kept)", HookPatch, Hook, 200,
             (*_BODY, 404, 503)),
    Endpoint("DELETE", "/hooks/{hook_id}", hooks.delete_hook, "write",
             "Delete a hook and drop its backlog and dead letters", status=204, errors=(404,)),
    Endpoint("POST", "/hooks/{hook_id}/pause", hooks.pause_hook, "write",
             "Pause a hook: nothing is sent, its backlog is kept", response=Hook, errors=(404,)),
    Endpoint("POST", "/hooks/{hook_id}/resume", hooks.resume_hook, "write",
             "Resume a paused or failing hook: its backlog is sent first", response=Hook, errors=(404,)),
    Endpoint("POST", "/hooks/{hook_id}/test", hooks.test_hook, "write",
             "Send one sample event through the hook now and report the destination's answer",
             response=HookTestResult, errors=(404, 409, 429, 503)),
    Endpoint("POST", "/hooks/{hook_id}/replay", hooks.replay_hook, "write",
             "Re-send stored events of a time range or a message to this hook only: a job a hooks worker runs",
             ReplayIn, Replay, 202, (*_BODY, 404, 409)),
    Endpoint("GET", "/hooks/{hook_id}/replays", hooks.list_hook_replays, "read",
             "A hook's replay jobs, newest first", response=ReplayList, errors=(404,)),
    Endpoint("GET", "/hooks/{hook_id}/replays/{replay_id}", hooks.get_hook_replay, "read",
             "A replay job: status and events queued so far", response=Replay, errors=(404,)),
    Endpoint("GET", "/hooks/{hook_id}/dead-letters", hooks.list_dead_letters, "read",
             "The oldest dead-lettered deliveries of a hook, with their last error", response=DeadLetterList,
             errors=(404,)),
    Endpoint("POST", "/hooks/{hook_id}/dead-letters/replay", hooks.requeue_hook_dead_letters, "write",
             "Send a hook's dead letters again (moved to its replay stream)", response=DeadLettersRequeued,
             status=202, errors=(404,)),
]  # fmt: skip


def build_api(state: EdgeState) -> Starlette:
    ctx = ApiContext(state)
    schema = build_openapi(ENDPOINTS)

    async def openapi(request: Request) -> Response:
        return json_response(schema)

    by_path: dict[str, dict[str, Any]] = {}
    for ep in ENDPOINTS:
        by_path.setdefault(ep.path, {})[ep.method] = wrap(ep, ctx)
    routes: list[Any] = [Route("/openapi.json", openapi, methods=["GET"])]
    routes += [methods_route(path, handlers) for path, handlers in by_path.items()]
    api = Starlette(routes=routes, exception_handlers={HTTPException: http_exception})
    # A redirect to the path with(out) its slash would be built from the request's Host header.
    api.router.redirect_slashes = False
    return api

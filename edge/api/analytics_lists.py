"""Lists a page at a time: messages, profiles by field values, list, status and activity, a profile's events."""

from __future__ import annotations

import asyncpg
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from edge.api._http import ApiContext, json_response, path_id
from edge.api.analytics_csv import csv_response, wants_csv
from edge.api.profiles import COLUMNS, profile_of
from edge.api.schemas import MessagePage, MessageSummary, ProfilePage, Timeline, TimelineEvent
from tracker.domain.analytics import listing

_MESSAGE_COLUMNS = ("id", "channel", "name", "resource_id", "current_version", "created_at")
_PROFILE_COLUMNS = ", ".join(f"p.{c.strip()}" for c in COLUMNS.split(","))


async def list_messages(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    rows, following = await listing.messages_page(conn, request.query_params)
    if wants_csv(request):
        return csv_response("messages", _MESSAGE_COLUMNS, ([r[c] for c in _MESSAGE_COLUMNS] for r in rows))
    return json_response(MessagePage([MessageSummary(*(r[c] for c in _MESSAGE_COLUMNS)) for r in rows], following))


async def list_profiles(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    fields = request.query_params.getlist("field")
    rows, following = await listing.profiles_page(conn, request.query_params, fields, _PROFILE_COLUMNS)
    profiles = [profile_of(r) for r in rows]
    if wants_csv(request):
        header = ("id", "external_id", "email", "phone", "email_status", "phone_status", "fields", "created_at")
        return csv_response("profiles", header, ([p.id, p.external_id, p.email, p.phone, p.email_status,
                                                  p.phone_status, msgspec.json.encode(p.fields).decode(),
                                                  p.created_at] for p in profiles))  # fmt: skip
    return json_response(ProfilePage(profiles, following))


async def profile_events(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    profile_id = path_id(request, "profile_id")
    rows, following = await listing.timeline(conn, profile_id, request.query_params)
    events = [
        TimelineEvent(r["id"], r["ts"], r["kind"], r["channel"], r["message_id"], r["link_version"], r["link_index"],
                      r["verdict"], msgspec.json.decode(r["data"]) if r["data"] else None)
        for r in rows
    ]  # fmt: skip
    if wants_csv(request):
        header = ("id", "ts", "kind", "channel", "message_id", "link_version", "link_index", "verdict", "data")
        return csv_response(f"profile-{profile_id}-events", header,
                            ([e.id, e.ts, e.kind, e.channel, e.message_id, e.link_version, e.link_index, e.verdict,
                              r["data"]] for e, r in zip(events, rows, strict=True)))  # fmt: skip
    return json_response(Timeline(profile_id, events, following))

"""Messages: register content (a new link-table version each time), read it, its counters, render it."""

from __future__ import annotations

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from edge.api._http import ApiContext, json_response, path_id, read_json
from edge.api.schemas import (
    KindCounter,
    LinkOut,
    Message,
    MessageIn,
    MessageStats,
    RenderedRecipient,
    RenderIn,
    RenderOut,
    VersionIn,
)
from tracker.domain.errors import InputError, NotFound
from tracker.domain.link_tables import load_version
from tracker.domain.messages import RegisteredVersion, honeypot_url, register_message, register_version
from tracker.domain.render import render_message
from tracker.domain.verdict_store import record_renders


def _message(registered: RegisteredVersion) -> Message:
    links = [LinkOut(index, link.url, dict(link.attributes)) for index, link in enumerate(registered.links)]
    return Message(
        registered.message_id, registered.channel, registered.name, registered.resource_id, registered.version, links
    )


async def create_message(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    body = await read_json(request, ctx, MessageIn)
    trap = honeypot_url(ctx.settings) if body.honeypot else None
    registered = await register_message(conn, body.channel, body.name, body.content, body.resource_id, trap)
    return json_response(_message(registered), 201)


async def create_version(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    message_id = path_id(request, "message_id")
    body = await read_json(request, ctx, VersionIn)
    registered = await register_version(conn, message_id, body.content, honeypot_url(ctx.settings))
    return json_response(_message(registered), 201)


async def get_message(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    message_id = path_id(request, "message_id")
    row = await conn.fetchrow(
        "select channel, name, resource_id, current_version from messages where id = $1", message_id
    )
    if row is None:
        raise NotFound("message", message_id)
    version = row["current_version"]
    table = await load_version(conn, message_id, version) if version else None
    links = tuple(table.links) if table is not None else ()
    return json_response(
        _message(RegisteredVersion(message_id, version, row["channel"], row["name"], row["resource_id"], links))
    )


async def message_stats(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    message_id = path_id(request, "message_id")
    if not await conn.fetchval("select exists (select from messages where id = $1)", message_id):
        raise NotFound("message", message_id)
    rows = await conn.fetch(
        "select kind, total, uniques, first_at, last_at, human, human_uniques, machine, machine_uniques"
        " from message_counters where message_id = $1 order by kind",
        message_id,
    )
    reasons: dict[str, dict[str, dict[str, int]]] = {}
    for row in await conn.fetch(
        "select kind, verdict, reason, total from message_verdict_reasons"
        " where message_id = $1 and total <> 0 order by kind, verdict, reason",
        message_id,
    ):
        reasons.setdefault(row["kind"], {}).setdefault(row["verdict"], {})[row["reason"]] = row["total"]
    counters = {
        row["kind"]: KindCounter(row["total"], row["uniques"], row["first_at"], row["last_at"], row["human"],
                                 row["human_uniques"], row["machine"], row["machine_uniques"],
                                 reasons.get(row["kind"], {}))
        for row in rows
    }  # fmt: skip
    return json_response(MessageStats(message_id, counters))


async def render(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    message_id = path_id(request, "message_id")
    body = await read_json(request, ctx, RenderIn)
    limit = ctx.settings.edge.api_render_max_recipients
    wanted = list(dict.fromkeys(body.profile_ids))
    if len(wanted) > limit:
        raise InputError("too_many_recipients", f"{len(wanted)} profiles in one request; at most {limit}")
    rows = await conn.fetch("select id from profiles where id = any($1::bigint[])", wanted)
    known = {row["id"] for row in rows}
    recipients = [profile_id for profile_id in wanted if profile_id in known]
    info, rendered = await render_message(
        conn, ctx.settings, message_id, recipients, body.version, redis=ctx.redis, cache=ctx.templates
    )
    await record_renders(conn, message_id, recipients)  # the `too fast` rule's reference time
    return json_response(
        RenderOut(
            message_id,
            info.version,
            info.channel,
            [RenderedRecipient(r.profile_id, r.body, r.headers, r.push_urls) for r in rendered],
            [profile_id for profile_id in wanted if profile_id not in known],
        )
    )

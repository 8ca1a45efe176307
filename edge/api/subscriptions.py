"""Resources (subscription lists, one channel each) and profiles' subscriptions to them.

Times follow the flusher's rules: subscribed_at is when the profile last
became subscribed, confirmed_at when it confirmed a double opt-in,
unsubscribed_at when it last left; a later event never loses to an older one.
"""

from __future__ import annotations

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from edge.api._http import ApiContext, json_response, path_id, read_json
from edge.api.schemas import (
    Resource,
    ResourceIn,
    ResourceList,
    SubscribeIn,
    Subscriber,
    SubscriberPage,
    Subscription,
    SubscriptionList,
)
from tracker.contract.numbers import parse_int
from tracker.domain.errors import Conflict, InputError, NotFound

_SUBSCRIPTION = """
select s.profile_id, s.resource_id, r.name as resource_name, r.channel, s.status, s.created_at,
       s.subscribed_at, s.confirmed_at, s.unsubscribed_at, s.updated_at
from subscriptions s join resources r on r.id = s.resource_id
"""


def _resource(row: asyncpg.Record) -> Resource:
    return Resource(row["id"], row["name"], row["channel"], row["created_at"])


def _subscription(row: asyncpg.Record) -> Subscription:
    return Subscription(**dict(row))


async def create_resource(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    body = await read_json(request, ctx, ResourceIn)
    row = await conn.fetchrow(
        "insert into resources (name, channel) values ($1, $2) returning id, name, channel, created_at",
        body.name,
        body.channel,
    )
    return json_response(_resource(row), 201)


async def list_resources(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    rows = await conn.fetch("select id, name, channel, created_at from resources order by id")
    return json_response(ResourceList([_resource(row) for row in rows]))


async def get_resource(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    resource_id = path_id(request, "resource_id")
    row = await conn.fetchrow("select id, name, channel, created_at from resources where id = $1", resource_id)
    if row is None:
        raise NotFound("resource", resource_id)
    return json_response(_resource(row))


# Who a send to the list may go to: an address or number that works, by the list's channel.
_SENDABLE = {
    "email": "p.email is not null and p.email_status = 'active'",
    "sms": "p.phone is not null and p.phone_status <> 'complained'",
}
_PAGE_MAX = 1000


async def list_subscribers(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    """A list's profiles with a given status, a page at a time in profile id order (keyset, no offset)."""
    resource_id = path_id(request, "resource_id")
    channel = await conn.fetchval("select channel from resources where id = $1", resource_id)
    if channel is None:
        raise NotFound("resource", resource_id)
    query = request.query_params
    status = query.get("status", "subscribed")
    if status not in ("pending", "subscribed", "unsubscribed"):
        raise InputError("invalid_query", f"status {status[:40]!r}: expected pending, subscribed or unsubscribed", 422)
    sendable = _flag(query.get("sendable", "false"), "sendable")
    after = _number(query.get("after", "0"), "after", 0, 2**63 - 1)
    limit = _number(query.get("limit", "500"), "limit", 1, _PAGE_MAX)
    condition = _SENDABLE.get(channel, "true") if sendable else "true"
    rows = await conn.fetch(
        "select s.profile_id, p.external_id, p.email, p.phone, s.status, s.subscribed_at, s.confirmed_at,"
        " s.unsubscribed_at, p.email_status, p.phone_status"
        " from subscriptions s join profiles p on p.id = s.profile_id"
        f" where s.resource_id = $1 and s.status = $2 and s.profile_id > $3 and {condition}"
        " order by s.profile_id limit $4",
        resource_id, status, after, limit + 1,
    )  # fmt: skip
    page = [Subscriber(**dict(row)) for row in rows[:limit]]
    return json_response(SubscriberPage(page, page[-1].profile_id if len(rows) > limit else None))


# The spellings the schema lists (FLAG_VALUES), in lower case; anything else is refused, not guessed at.
_FLAGS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
FLAG_VALUES = list(_FLAGS)


def _flag(text: str, name: str) -> bool:
    value = _FLAGS.get(text)
    if value is None:
        raise InputError("invalid_query", f"{name} {text[:40]!r}: expected true or false (or 1, 0, yes, no)", 422)
    return value


def _number(text: str, name: str, low: int, high: int) -> int:
    value = parse_int(text, low, high)
    if value is None:
        raise InputError("invalid_query", f"{name} {text[:40]!r}: expected a whole number from {low} to {high}", 422)
    return value


async def _require(conn: asyncpg.Connection, profile_id: int, resource_id: int | None = None) -> None:
    if not await conn.fetchval("select exists (select from profiles where id = $1)", profile_id):
        raise NotFound("profile", profile_id)
    if resource_id is not None and not await conn.fetchval(
        "select exists (select from resources where id = $1)", resource_id
    ):
        raise NotFound("resource", resource_id)


async def _one(conn: asyncpg.Connection, profile_id: int, resource_id: int) -> Subscription:
    row = await conn.fetchrow(
        _SUBSCRIPTION + " where s.profile_id = $1 and s.resource_id = $2", profile_id, resource_id
    )
    if row is None:
        raise NotFound(f"subscription of profile {profile_id} to resource", resource_id)
    return _subscription(row)


async def list_subscriptions(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    profile_id = path_id(request, "profile_id")
    await _require(conn, profile_id)
    rows = await conn.fetch(_SUBSCRIPTION + " where s.profile_id = $1 order by s.resource_id", profile_id)
    return json_response(SubscriptionList([_subscription(row) for row in rows]))


async def subscribe(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    """Subscribed at once, or pending until confirmed with double opt-in; already subscribed stays so."""
    profile_id = path_id(request, "profile_id")
    body = await read_json(request, ctx, SubscribeIn)
    status = "pending" if body.double_opt_in else "subscribed"
    async with conn.transaction():
        await _require(conn, profile_id, body.resource_id)
        await conn.execute(
            "insert into subscriptions as s (profile_id, resource_id, status, subscribed_at)"
            " values ($1, $2, $3, case when $3 = 'subscribed' then now() end)"
            " on conflict (profile_id, resource_id) do update set"
            "   status = excluded.status, subscribed_at = coalesce(excluded.subscribed_at, s.subscribed_at),"
            "   updated_at = now()"
            " where s.status <> 'subscribed'",
            profile_id,
            body.resource_id,
            status,
        )
        return json_response(await _one(conn, profile_id, body.resource_id))


async def unsubscribe(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    profile_id, resource_id = path_id(request, "profile_id"), path_id(request, "resource_id")
    async with conn.transaction():
        await _require(conn, profile_id, resource_id)
        await conn.execute(
            "update subscriptions set status = 'unsubscribed', unsubscribed_at = now(), updated_at = now()"
            " where profile_id = $1 and resource_id = $2 and status <> 'unsubscribed'",
            profile_id,
            resource_id,
        )
        return json_response(await _one(conn, profile_id, resource_id))


async def confirm(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    """Confirm a pending double opt-in (as the edge's /cf/ link does); confirming twice is harmless."""
    profile_id, resource_id = path_id(request, "profile_id"), path_id(request, "resource_id")
    async with conn.transaction():
        await _require(conn, profile_id, resource_id)
        current = await _one(conn, profile_id, resource_id)
        if current.status == "unsubscribed":
            raise Conflict("unsubscribed", "the profile unsubscribed from this resource; subscribe it again first")
        await conn.execute(
            "update subscriptions set status = 'subscribed', subscribed_at = now(), confirmed_at = now(),"
            " updated_at = now() where profile_id = $1 and resource_id = $2 and status = 'pending'",
            profile_id,
            resource_id,
        )
        return json_response(await _one(conn, profile_id, resource_id))

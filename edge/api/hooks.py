"""Action hooks: create, list, read, change, pause, resume, delete, test, replay, dead letters.

Definitions live in Postgres; the hook's consumer groups live in Redis and are
made here, so a new hook gets every event committed from about now on (the
flusher notices within TRACKER_HOOKS_CHECK_INTERVAL_S). Every change bumps a
version key that makes the hooks worker reload at once. Secrets are sealed
before they are stored (tracker.domain.hook_secrets) and never opened here, nor
returned: the API shows whether each is set. Destinations must be public
addresses unless the operator allowed more (tracker.domain.destination_policy).

A test delivery is sent by the forwarder; its answer may take seconds, so the
handler gives its Postgres connection back before waiting, and tests running at
once over all edges are bounded (TRACKER_HOOKS_TEST_CONCURRENCY).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time

import asyncpg
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from edge.api._http import ApiContext, json_response, path_id, read_json
from edge.api.hook_schemas import (
    DeadLetter,
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
from tracker.contract.keys import (
    hook_dead_letter_stream,
    hook_test_reply_key,
    hook_test_requests_key,
    hooks_version_key,
)
from tracker.domain.destination_policy import DestinationPolicy
from tracker.domain.errors import Conflict, InputError, NotFound
from tracker.domain.hook_definitions import (
    Destination,
    TestReply,
    TestRequest,
    check_destination,
    check_reach,
    encode_json,
    shown_destination,
)
from tracker.domain.hook_replays import OPEN_JOBS_PER_HOOK, create_replay, get_replay, list_replays
from tracker.domain.hook_secrets import reseal, seal_destination, stored_view
from tracker.domain.hook_streams import backlog_entries as count_backlog
from tracker.domain.hook_streams import (
    claim_test_slot,
    create_groups,
    dead_letters,
    destroy_groups,
    release_test_slot,
    requeue_dead_letters,
    set_hooks_count,
)
from tracker.domain.secret_box import SecretBox, SecretKeyMissing
from tracker.streams.cluster import plain_client

# The secrets column is read only where a write needs it, never for a view.
_COLUMNS = (
    "id, name, destination, config::text as config, filter::text as filter, state, consecutive_failures,"
    " last_error, last_error_at, last_success_at, delivered, dead_lettered, created_at, updated_at"
)


async def _hook(ctx: ApiContext, row: asyncpg.Record) -> Hook:
    settings = ctx.settings
    backlog = await count_backlog(ctx.redis, settings.stream_prefix, settings.stream_shards, row["id"])
    dead = await ctx.redis.xlen(hook_dead_letter_stream(settings.stream_prefix, row["id"]))
    shown = shown_destination(json.loads(row["config"]))
    return msgspec.convert({
        "id": row["id"], "name": row["name"], "state": row["state"], "destination": shown,
        "filter": json.loads(row["filter"]), "backlog_entries": backlog, "dead_letter_entries": dead,
        "consecutive_failures": row["consecutive_failures"], "last_error": row["last_error"],
        "last_error_at": row["last_error_at"], "last_success_at": row["last_success_at"],
        "delivered": row["delivered"], "dead_lettered": row["dead_lettered"], "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }, Hook, from_attributes=False, builtin_types=(dt.datetime,))  # fmt: skip


async def _row(conn: asyncpg.Connection, hook_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(f"select {_COLUMNS} from hooks where id = $1", hook_id)
    if row is None:
        raise NotFound("hook", hook_id)
    return row


def _checked(ctx: ApiContext, destination: Destination) -> None:
    problem = check_destination(destination)
    if problem:
        raise InputError("invalid_destination", problem)
    problem = check_reach(destination, DestinationPolicy.from_settings(ctx.settings))
    if problem:
        raise InputError("destination_not_allowed", problem)


def _sealed(ctx: ApiContext, destination: Destination, stored: str | None = None) -> str:
    try:
        return seal_destination(destination, SecretBox.from_settings(ctx.settings), stored)
    except SecretKeyMissing as exc:  # never stored in the clear: the operator has to give a key first
        raise InputError("secrets_key_missing", f"{exc} before hooks with secrets can be stored", 503) from None


async def _changed(ctx: ApiContext) -> None:
    await ctx.redis.incr(hooks_version_key(ctx.settings.stream_prefix))


async def _recount(ctx: ApiContext, conn: asyncpg.Connection) -> None:
    count = await conn.fetchval("select count(*) from hooks")
    await set_hooks_count(ctx.redis, ctx.settings.stream_prefix, ctx.settings.stream_shards, count)


async def create_hook(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    body = await read_json(request, ctx, HookIn)
    _checked(ctx, body.destination)
    sealed = _sealed(ctx, body.destination)
    row = await conn.fetchrow(
        f"insert into hooks (name, destination, config, secrets, filter, state) values ($1, $2, $3, $4, $5, $6)"
        f" returning {_COLUMNS}",
        body.name, body.destination.__struct_config__.tag, json.dumps(stored_view(body.destination, sealed)),
        sealed, encode_json(body.filter).decode(), body.state,
    )  # fmt: skip
    # Groups first, then the flusher's switch: no event is forwarded before the groups can hold it.
    await create_groups(ctx.redis, ctx.settings.stream_prefix, ctx.settings.stream_shards, row["id"])
    await _recount(ctx, conn)
    return json_response(await _hook(ctx, row), 201)


async def list_hooks(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    rows = await conn.fetch(f"select {_COLUMNS} from hooks order by id")
    return json_response(HookList([await _hook(ctx, row) for row in rows]))


async def get_hook(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    return json_response(await _hook(ctx, await _row(conn, path_id(request, "hook_id"))))


async def update_hook(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    hook_id = path_id(request, "hook_id")
    body = await read_json(request, ctx, HookPatch)
    async with conn.transaction():
        row = await conn.fetchrow(
            f"select {_COLUMNS}, secrets::text as secrets from hooks where id = $1 for update", hook_id
        )
        if row is None:
            raise NotFound("hook", hook_id)
        name = row["name"] if body.name is msgspec.UNSET else body.name
        kind, config, sealed = row["destination"], row["config"], row["secrets"]
        if body.destination is not msgspec.UNSET:
            _checked(ctx, body.destination)
            # Secrets left out are kept as they are stored (sealed): they are never opened here.
            sealed = _sealed(ctx, body.destination, row["secrets"])
            kind, config = body.destination.__struct_config__.tag, json.dumps(stored_view(body.destination, sealed))
        else:
            sealed = reseal(sealed, SecretBox.from_settings(ctx.settings)) or sealed  # stored before sealing
        filter_json = row["filter"] if body.filter is msgspec.UNSET else encode_json(body.filter).decode()
        row = await conn.fetchrow(
            f"update hooks set name = $2, destination = $3, config = $4, secrets = $5, filter = $6,"
            f" updated_at = now() where id = $1 returning {_COLUMNS}",
            hook_id, name, kind, config, sealed, filter_json,
        )  # fmt: skip
    await _changed(ctx)
    return json_response(await _hook(ctx, row))


async def _set_state(request: Request, conn: asyncpg.Connection, ctx: ApiContext, state: str) -> Response:
    hook_id = path_id(request, "hook_id")
    row = await conn.fetchrow(
        f"update hooks set state = $2, updated_at = now(),"
        f" consecutive_failures = case when $2 = 'active' then 0 else consecutive_failures end"
        f" where id = $1 returning {_COLUMNS}, secrets::text as secrets",
        hook_id, state,
    )  # fmt: skip
    if row is None:
        raise NotFound("hook", hook_id)
    resealed = reseal(row["secrets"], SecretBox.from_settings(ctx.settings))
    if resealed is not None:  # secrets stored before sealing existed: sealed at this write (unless changed meanwhile)
        await conn.execute("update hooks set secrets = $2 where id = $1 and secrets = $3::jsonb",
                           hook_id, resealed, row["secrets"])  # fmt: skip
    await _changed(ctx)
    return json_response(await _hook(ctx, row))


async def pause_hook(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    return await _set_state(request, conn, ctx, "paused")


async def resume_hook(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    return await _set_state(request, conn, ctx, "active")


async def delete_hook(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    hook_id = path_id(request, "hook_id")
    if await conn.fetchval("delete from hooks where id = $1 returning id", hook_id) is None:
        raise NotFound("hook", hook_id)
    await destroy_groups(ctx.redis, ctx.settings.stream_prefix, ctx.settings.stream_shards, hook_id)
    await _recount(ctx, conn)
    return Response(status_code=204)


async def test_hook(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    """Asks the hooks worker (which has the destination clients and the secrets) to send a sample.

    The answer is the class of what the destination said ("2xx", "5xx", "connect failed"), never
    its words: a test must not turn the forwarder into a way to read or probe other servers.
    """
    hook_id = path_id(request, "hook_id")
    state = await conn.fetchval("select state from hooks where id = $1", hook_id)
    if state is None:
        raise NotFound("hook", hook_id)
    if state == "paused":
        raise Conflict("hook_paused", f"hook {hook_id} is paused: resume it before testing it")
    # The wait below may take seconds and the pool is small: the connection goes back now (the
    # wrapper's own release of it afterwards is then a no-op in asyncpg).
    assert ctx.state.pg_pool is not None
    await ctx.state.pg_pool.release(conn)
    settings = ctx.settings
    request_id = secrets.token_hex(8)
    reply_key = hook_test_reply_key(settings.stream_prefix, request_id)
    timeout = settings.forwarder.test_timeout_s
    slots = hook_test_requests_key(settings.stream_prefix) + ":running"
    if not await claim_test_slot(ctx.redis, slots, request_id, settings.forwarder.test_concurrency, timeout + 1):
        raise InputError("too_many_tests", f"{settings.forwarder.test_concurrency} test deliveries are running;"
                         " try again in a few seconds", 429)  # fmt: skip
    # Its own client: the edge's one times out in about a second, less than a test may take.
    client = plain_client(settings.redis_url, settings.redis_cluster, socket_timeout=timeout + 5,
                          socket_connect_timeout=5)  # fmt: skip
    try:
        test = TestRequest(request_id, hook_id, reply_key, deadline=time.time() + timeout)
        await client.rpush(hook_test_requests_key(settings.stream_prefix), msgspec.json.encode(test))
        # The worker gives up on the destination after `timeout`; a second more for its reply to arrive.
        popped = await client.blpop([reply_key], timeout=timeout + 1)
    finally:
        await client.aclose()
        await release_test_slot(ctx.redis, slots, request_id)
    if popped is None:
        raise InputError(
            "hooks_worker_unavailable", f"no hooks worker answered within {timeout}s; is `hooks` running?", 503
        )
    reply = msgspec.json.decode(popped[1], type=TestReply)
    return json_response(HookTestResult(reply.ok, reply.answer, reply.took_ms))


async def replay_hook(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    hook_id = path_id(request, "hook_id")
    body = await read_json(request, ctx, ReplayIn)
    await _row(conn, hook_id)
    since, until = body.since, body.until
    if body.message_id is not None:
        created = await conn.fetchval("select created_at from messages where id = $1", body.message_id)
        if created is None:
            raise NotFound("message", body.message_id)
        # Edge clocks may run a little behind the database's: a day of slack either side.
        since = since or created - dt.timedelta(days=1)
        until = until or dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    if since is None or until is None:
        raise InputError("invalid_request", "give since and until (ISO 8601 times), or a message_id")
    if since.tzinfo is None or until.tzinfo is None:
        raise InputError("invalid_request", "since and until need a time zone (e.g. 2026-01-31T00:00:00Z)")
    if since >= until:
        raise InputError("invalid_request", "since must be before until")
    row = await create_replay(conn, hook_id, since, until, body.message_id, ctx.settings.forwarder.replay_max_events)
    if row is None:
        raise Conflict("too_many_replays", f"hook {hook_id} has {OPEN_JOBS_PER_HOOK} replay jobs queued or running;"
                       " wait for one to finish (GET .../replays)")  # fmt: skip
    return json_response(_replay(row), 202)


async def list_hook_replays(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    hook_id = path_id(request, "hook_id")
    await _row(conn, hook_id)
    return json_response(ReplayList([_replay(row) for row in await list_replays(conn, hook_id)]))


async def get_hook_replay(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    hook_id, replay_id = path_id(request, "hook_id"), path_id(request, "replay_id")
    row = await get_replay(conn, hook_id, replay_id)
    if row is None:
        await _row(conn, hook_id)  # 404 for the hook first, if it is the hook that is missing
        raise NotFound("replay", replay_id)
    return json_response(_replay(row))


def _replay(row: asyncpg.Record) -> Replay:
    return Replay(
        id=row["id"], hook_id=row["hook_id"], status=row["status"], since=row["since"], until=row["until"],
        message_id=row["message_id"], max_events=row["max_events"], queued=row["queued_events"],
        truncated=row["truncated"], resume_from=row["after_ts"] if row["truncated"] else None, error=row["error"],
        created_at=row["created_at"], started_at=row["started_at"],
        finished_at=row["finished_at"],
    )  # fmt: skip


async def list_dead_letters(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    hook_id = path_id(request, "hook_id")
    await _row(conn, hook_id)
    found = await dead_letters(ctx.redis, ctx.settings.stream_prefix, hook_id)
    return json_response(DeadLetterList([DeadLetter(**item) for item in found]))


async def requeue_hook_dead_letters(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    hook_id = path_id(request, "hook_id")
    await _row(conn, hook_id)
    moved = await requeue_dead_letters(ctx.redis, ctx.settings.stream_prefix, hook_id)
    return json_response(DeadLettersRequeued(moved), 202)

"""Lists a page at a time (keyset, in id or time order): messages, profiles by filters, a profile's timeline."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

import asyncpg

from tracker.contract.numbers import parse_int
from tracker.domain.analytics.active_days import ACTIVE_KINDS
from tracker.domain.analytics.params import bad, choice, integer, moment
from tracker.domain.errors import NotFound
from tracker.domain.profile_fields import load_fields, parse_text

CHANNELS = ("email", "sms", "web_push", "app_push", "site")
MAX_CURSOR_MICROS = 10**17 - 1  # microseconds since 1970: past year 4000
_EVENT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# `before` as the schema states it (the page's `next_before`), checked by timeline_cursor.
CURSOR_PATTERN = "^(0|[1-9][0-9]{0,16})_" + _EVENT_ID.pattern + "$"
SUBSCRIPTION_STATUSES = ("pending", "subscribed", "unsubscribed")


def page_limit(query: Mapping[str, str]) -> int:
    return integer(query, "limit", 100, 1, 1000) or 100


async def messages_page(conn: asyncpg.Connection, query: Mapping[str, str]) -> tuple[list[asyncpg.Record], int | None]:
    after = integer(query, "after", 0, 0) or 0
    limit = page_limit(query)
    channel = choice(query, "channel", CHANNELS, None)
    start, end = moment(query, "created_from"), moment(query, "created_to")
    name = query.get("name") or None
    if name is not None and len(name) > 500:
        raise bad("name", "longer than 500 characters")
    rows = await conn.fetch(
        "select id, channel, name, resource_id, current_version, created_at from messages"
        " where id > $1 and ($2::text is null or channel = $2)"
        " and ($3::timestamptz is null or created_at >= $3) and ($4::timestamptz is null or created_at < $4)"
        # `name` matches as a case-insensitive substring, the way people remember a campaign's name
        " and ($5::text is null or strpos(lower(name), lower($5)) > 0)"
        " order by id limit $6",
        after, channel, start, end, name, limit + 1,
    )  # fmt: skip
    return rows[:limit], (rows[limit - 1]["id"] if len(rows) > limit else None)


async def profiles_page(
    conn: asyncpg.Connection, query: Mapping[str, str], fields: list[str], columns: str
) -> tuple[list[asyncpg.Record], int | None]:
    """Profiles matching every filter given, in id order. `fields` are the `field` values (`name:value`)."""
    after = integer(query, "after", 0, 0) or 0
    limit = page_limit(query)
    where, args = ["p.id > $1"], [after]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if fields:
        specs = await load_fields(conn)
        wanted: dict[str, Any] = {}
        for text in fields:
            name, sep, raw = text.partition(":")
            if not sep or name not in specs:
                raise bad("field", f"expected name:value with a declared custom field, got {text[:60]!r}")
            wanted[name] = parse_text(specs[name], raw)
        where.append(f"p.fields @> {arg(json.dumps(wanted))}::jsonb")
    resource = integer(query, "resource", None)
    status = choice(query, "status", SUBSCRIPTION_STATUSES, None)
    if status and resource is None:
        raise bad("status", "needs resource=")
    if resource is not None:
        where.append(f"exists (select from subscriptions s where s.profile_id = p.id"
                     f" and s.resource_id = {arg(resource)}"
                     f" and s.status = {arg(status or 'subscribed')})")  # fmt: skip
    for name, kinds in (("opened", ["opened", "push_opened"]), ("clicked", ["clicked", "push_clicked"])):
        message = integer(query, name, None)
        if message is not None:
            where.append(f"exists (select from message_profile_stats m where m.message_id = {arg(message)}"
                         f" and m.profile_id = p.id and m.kind = any({arg(kinds)}::text[]))")  # fmt: skip
    since = moment(query, "active_since")
    if since is not None:
        # The day rows narrow it down (a probe of their primary key); the profile's timeline index says
        # whether one of that day's actions, or a later one's, is at or after the moment asked.
        at = arg(since)
        where.append(f"exists (select from profile_active_days d where d.profile_id = p.id"
                     f" and d.day >= ({at}::timestamptz at time zone 'UTC')::date)"
                     f" and exists (select from events e where e.profile_id = p.id and e.ts >= {at}"
                     f" and e.kind = any({arg(sorted(ACTIVE_KINDS))}::text[]))")  # fmt: skip
    sql = f"select {columns} from profiles p where {' and '.join(where)} order by p.id limit {arg(limit + 1)}"
    rows = await conn.fetch(sql, *args)
    return rows[:limit], (rows[limit - 1]["id"] if len(rows) > limit else None)


def timeline_cursor(raw: str | None) -> tuple[dt.datetime, str] | None:
    """`before` is the next_before of the previous page: `<microseconds>_<event id>`."""
    if raw is None:
        return None
    micros_text, sep, event_id = raw.partition("_")
    micros = parse_int(micros_text, 0, MAX_CURSOR_MICROS)
    # As the page wrote it: the event id as Postgres prints a uuid (a malformed one would be a failed cast).
    if not sep or micros is None or not _EVENT_ID.fullmatch(event_id):
        raise bad("before", "expected the next_before of a previous page")
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros), event_id


async def timeline(
    conn: asyncpg.Connection, profile_id: int, query: Mapping[str, str]
) -> tuple[list[asyncpg.Record], str | None]:
    if not await conn.fetchval("select exists (select from profiles where id = $1)", profile_id):
        raise NotFound("profile", profile_id)
    limit = page_limit(query)
    cursor = timeline_cursor(query.get("before"))
    kind = query.get("kind") or None
    rows = await conn.fetch(
        "select id::text as id, ts, kind, channel, message_id, link_version, link_index, verdict, data::text as data"
        " from events where profile_id = $1"
        " and ($2::timestamptz is null or (ts, id) < ($2, $3::uuid)) and ($4::text is null or kind = $4)"
        " order by ts desc, id desc limit $5",
        profile_id, cursor[0] if cursor else None, cursor[1] if cursor else None, kind, limit + 1,
    )  # fmt: skip
    following = None
    if len(rows) > limit:
        last = rows[limit - 1]
        micros = (last["ts"] - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
        following = f"{micros}_{last['id']}"
    return rows[:limit], following

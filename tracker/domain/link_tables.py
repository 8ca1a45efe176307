"""Messages and their immutable link-table versions in Postgres, and their cached form.

Writers (the API, the demo seed, tests) go through `create_message` and
`add_version`, which check every URL; the edge reads through `load_version`.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import msgspec

from tracker.contract.urls import check_redirect_url


class Link(msgspec.Struct, frozen=True):
    url: str
    attributes: dict[str, str] = {}


class LinkTable(msgspec.Struct, frozen=True):
    """One version of a message's links, as cached in Redis (msgpack) and in process."""

    message_id: int
    version: int
    channel: str
    links: list[Link]


encode_link_table = msgspec.msgpack.Encoder().encode
decode_link_table = msgspec.msgpack.Decoder(LinkTable).decode


async def create_message(
    conn: asyncpg.Connection,
    channel: str,
    name: str = "",
    links: list[Link] | None = None,
    resource_id: int | None = None,
    content: str | None = None,
) -> tuple[int, int]:
    """Create a message and, when links are given, its first link-table version."""
    async with conn.transaction():
        message_id = await conn.fetchval(
            "insert into messages (channel, name, resource_id) values ($1, $2, $3) returning id",
            channel,
            name,
            resource_id,
        )
        version = 0
        if links is not None:
            version = await add_version(conn, message_id, links, content)
    return message_id, version


async def add_version(
    conn: asyncpg.Connection, message_id: int, links: list[Link], content: str | None = None
) -> int:
    """Store a new immutable version of the message's link table; return its number."""
    for index, link in enumerate(links):
        try:
            check_redirect_url(link.url)
        except ValueError as exc:
            raise ValueError(f"link {index}: {exc}") from None
    async with conn.transaction():
        version = await conn.fetchval(
            "update messages set current_version = current_version + 1 where id = $1"
            " returning current_version",
            message_id,
        )
        if version is None:
            raise LookupError(f"message {message_id} does not exist")
        await conn.execute(
            "insert into link_table_versions (message_id, version, content) values ($1, $2, $3)",
            message_id,
            version,
            content,
        )
        await conn.executemany(
            "insert into links (message_id, version, idx, url, attributes) values ($1, $2, $3, $4, $5::jsonb)",
            [
                (message_id, version, index, link.url, json.dumps(link.attributes))
                for index, link in enumerate(links)
            ],
        )
    return version


async def load_version(conn: Any, message_id: int, version: int) -> LinkTable | None:
    """The link table of one version from Postgres, or None if there is no such version."""
    rows = await conn.fetch(
        "select m.channel, l.idx, l.url, l.attributes::text as attributes"
        " from link_table_versions v join messages m on m.id = v.message_id"
        " left join links l on l.message_id = v.message_id and l.version = v.version"
        " where v.message_id = $1 and v.version = $2 order by l.idx",
        message_id,
        version,
    )
    if not rows:
        return None
    links = [
        Link(row["url"], json.loads(row["attributes"]))
        for row in rows
        if row["idx"] is not None
    ]
    return LinkTable(message_id, version, rows[0]["channel"], links)

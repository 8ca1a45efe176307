"""A message's clicks per link of one link-table version, with the link text, and the version history."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from html import unescape

import asyncpg

from tracker.domain.errors import InputError, NotFound
from tracker.domain.html_links import LinkedHTML, find_links

_TAGS = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_CLOSE_A = re.compile(r"</a\s*>", re.IGNORECASE)


@dataclass
class LinkClicks:
    index: int
    url: str
    text: str
    total: int
    uniques: int
    human: int
    share: float | None  # of this version's clicks


@dataclass
class VersionChange:
    version: int
    created_at: dt.datetime  # when it became the current version
    links: int
    added: list[int] = field(default_factory=list)  # indexes new in this version
    removed: list[int] = field(default_factory=list)  # indexes of the previous version gone
    changed: list[dict[str, object]] = field(default_factory=list)  # {"index", "old_url", "new_url"}


@dataclass
class ClickMap:
    message_id: int
    version: int
    current_version: int
    total: int
    links: list[LinkClicks]
    versions: list[VersionChange]
    content: str | None = None  # the version's HTML (email), for the click map page


def link_texts(parsed: LinkedHTML) -> dict[int, str]:
    """Each tracked link's visible text: what follows its start tag up to `</a>`, tags removed."""
    texts: dict[int, str] = {}
    for position, part in enumerate(parsed.parts):
        if isinstance(part, int) and position + 1 < len(parsed.parts):
            after = str(parsed.parts[position + 1])
            inside = after[after.find(">") + 1 :]
            end = _CLOSE_A.search(inside)
            text = _SPACE.sub(" ", unescape(_TAGS.sub(" ", inside[: end.start() if end else 200]))).strip()
            texts[part] = text[:200]
    return texts


def parse_content(content: str | None) -> LinkedHTML | None:
    if not content:
        return None
    try:
        return find_links(content)
    except InputError:  # stored content was accepted once; a parser change must not break reports
        return None


async def click_map(conn: asyncpg.Connection, message_id: int, version: int | None) -> ClickMap:
    current = await conn.fetchval("select current_version from messages where id = $1", message_id)
    if current is None:
        raise NotFound("message", message_id)
    version = version or current
    content_row = await conn.fetchrow(
        "select content from link_table_versions where message_id = $1 and version = $2", message_id, version
    )
    if content_row is None:
        raise InputError("not_found", f"version {version} of message {message_id} does not exist", 404)
    rows = await conn.fetch(
        "select l.idx, l.url, coalesce(c.total, 0) as total, coalesce(c.uniques, 0) as uniques,"
        " coalesce(c.human, 0) as human"
        " from links l left join message_link_clicks c"
        "   on c.message_id = l.message_id and c.version = l.version and c.idx = l.idx"
        " where l.message_id = $1 and l.version = $2 order by l.idx",
        message_id, version,
    )  # fmt: skip
    parsed = parse_content(content_row["content"])
    texts = link_texts(parsed) if parsed else {}
    total = sum(r["total"] for r in rows)
    links = [
        LinkClicks(r["idx"], r["url"], texts.get(r["idx"], ""), r["total"], r["uniques"], r["human"],
                   round(r["total"] / total, 4) if total else None)
        for r in rows
    ]  # fmt: skip
    return ClickMap(message_id, version, current, total, links, await history(conn, message_id),
                    content_row["content"])  # fmt: skip


async def history(conn: asyncpg.Connection, message_id: int) -> list[VersionChange]:
    rows = await conn.fetch(
        "select v.version, v.created_at, coalesce(array_agg(l.idx order by l.idx) filter (where l.idx is not null),"
        " '{}') as idxs, coalesce(array_agg(l.url order by l.idx) filter (where l.idx is not null), '{}') as urls"
        " from link_table_versions v left join links l on l.message_id = v.message_id and l.version = v.version"
        " where v.message_id = $1 group by v.version, v.created_at order by v.version",
        message_id,
    )
    out: list[VersionChange] = []
    previous: dict[int, str] = {}
    for row in rows:
        now = dict(zip(row["idxs"], row["urls"], strict=True))
        change = VersionChange(row["version"], row["created_at"], len(now))
        if out:  # version 1 adds nothing: it is where the message starts
            change.added = sorted(set(now) - set(previous))
            change.removed = sorted(set(previous) - set(now))
            change.changed = [{"index": i, "old_url": previous[i], "new_url": now[i]}
                              for i in sorted(set(now) & set(previous)) if now[i] != previous[i]]  # fmt: skip
        out.append(change)
        previous = now
    return out

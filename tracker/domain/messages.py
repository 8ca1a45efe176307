"""Registering messages: content compiled, link attributes checked, a link-table version stored.

Link attributes are checked here, never at click time: `update-<field>`
needs a declared custom field and a value of its type; `subscribe-to` needs
an existing resource id. Attributes are stored verbatim, as the flusher
reads them ({"update-clicked_link": "true", "subscribe-to": "1"}).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import asyncpg

from tracker.config import Settings
from tracker.contract.numbers import parse_int
from tracker.domain.errors import InputError, NotFound
from tracker.domain.html_links import HONEYPOT
from tracker.domain.link_tables import Link, add_version, create_message
from tracker.domain.message_templates import CONFIRM, UNSUBSCRIBE, Template, compile_template
from tracker.domain.profile_fields import FieldValueError, load_fields, parse_text

MAX_NAME_LEN = 500
MAX_SUBSCRIBE_TO = 10**18 - 1  # the 18 digits the flusher's subscribe-to rule reads (flusher/effects.py)
_ASCII_SPACE = " \t\n\r\f\v"  # the spaces the flusher's rule allows around it


@dataclass(frozen=True)
class RegisteredVersion:
    message_id: int
    version: int
    channel: str
    name: str
    resource_id: int | None
    links: tuple[Link, ...]


async def register_message(
    conn: asyncpg.Connection, channel: str, name: str, content: str, resource_id: int | None = None,
    honeypot_url: str | None = None,
) -> RegisteredVersion:
    """Create a message with its first version; nothing is stored when anything is wrong.

    With `honeypot_url` (email only) every version gets one invisible link to it: no person sees
    it, so a fetch of it shows a machine (tracker.domain.verdicts).
    """
    if len(name) > MAX_NAME_LEN:
        raise InputError("invalid_name", f"name is longer than {MAX_NAME_LEN} characters")
    if honeypot_url is not None and channel != "email":
        raise InputError("honeypot_needs_email", "honeypot links are for email messages only")
    content = with_honeypot(content, honeypot_url)
    template = compile_template(channel, content)
    async with conn.transaction():
        await _check_resource(conn, channel, resource_id)
        await check_template(conn, template, resource_id)
        message_id, version = await create_message(
            conn, channel, name, list(template.links), resource_id=resource_id, content=content
        )
        if honeypot_url is not None:
            await conn.execute("update messages set honeypot = true where id = $1", message_id)
    return RegisteredVersion(message_id, version, channel, name, resource_id, template.links)


def honeypot_url(settings: Settings) -> str:
    """Where the honeypot link leads: the edge's own root (a machine that follows it learns nothing)."""
    return settings.public_url.rstrip("/") + "/"


def with_honeypot(content: str, url: str | None) -> str:
    """The content with the invisible link before `</body>` (or at the end); as it is without a URL."""
    if url is None or f" {HONEYPOT}=" in content:
        return content
    # Hidden from sight, screen readers and keyboards; an empty text so that no client shows it.
    trap = (f'<a href="{html.escape(url)}" {HONEYPOT}="1" aria-hidden="true" tabindex="-1"'
            ' style="display:none !important;mso-hide:all;font-size:0;line-height:0"></a>')  # fmt: skip
    at = content.lower().rfind("</body>")
    return content + trap if at < 0 else content[:at] + trap + content[at:]


async def register_version(
    conn: asyncpg.Connection, message_id: int, content: str, honeypot_url: str | None = None
) -> RegisteredVersion:
    """New content for an existing message: a new immutable link-table version."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "select channel, name, resource_id, honeypot from messages where id = $1 for update", message_id
        )
        if row is None:
            raise NotFound("message", message_id)
        if row["honeypot"] and honeypot_url is not None:
            content = with_honeypot(content, honeypot_url)
        template = compile_template(row["channel"], content)
        await check_template(conn, template, row["resource_id"])
        version = await add_version(conn, message_id, list(template.links), content)
    return RegisteredVersion(message_id, version, row["channel"], row["name"], row["resource_id"], template.links)


async def check_template(conn: Any, template: Template, resource_id: int | None) -> None:
    kinds = template.kinds
    for kind, placeholder in ((UNSUBSCRIBE, "{{unsubscribe_url}}"), (CONFIRM, "{{confirm_url}}")):
        if kind in kinds and resource_id is None:
            raise InputError(
                "placeholder_without_resource",
                f"{placeholder} needs a resource_id: it acts on the message's subscription list",
            )
    if not any(link.attributes for link in template.links):
        return
    fields = await load_fields(conn)
    resource_ids: set[int] = set()
    for index, link in enumerate(template.links):
        where = f"link {index} (line {template.lines[index]}, {link.url})"
        for name, value in link.attributes.items():
            if name == HONEYPOT:
                continue
            if name == "subscribe-to":
                resource_id = parse_int(value.strip(_ASCII_SPACE), 1, MAX_SUBSCRIBE_TO)
                if resource_id is None:
                    raise InputError("invalid_link_attribute", f"{where}: subscribe-to={value!r} is not a resource id")
                resource_ids.add(resource_id)
                continue
            field = name.removeprefix("update-")
            spec = fields.get(field)
            if spec is None:
                raise InputError("unknown_field", f"{where}: {name} names no declared profile field {field!r}")
            try:
                parse_text(spec, value)
            except FieldValueError as exc:
                raise InputError("invalid_link_attribute", f"{where}: {name}: {exc.message}") from None
    if resource_ids:
        found = {r["id"] for r in await conn.fetch("select id from resources where id = any($1)", list(resource_ids))}
        missing = sorted(resource_ids - found)
        if missing:
            raise InputError("unknown_resource", f"subscribe-to names resources that do not exist: {missing}")


async def _check_resource(conn: Any, channel: str, resource_id: int | None) -> None:
    if resource_id is None:
        return
    resource_channel = await conn.fetchval("select channel from resources where id = $1", resource_id)
    if resource_channel is None:
        raise InputError("unknown_resource", f"resource {resource_id} does not exist")
    if resource_channel != channel:
        raise InputError(
            "resource_channel_mismatch",
            f"resource {resource_id} is a {resource_channel} list; this message is {channel}",
        )

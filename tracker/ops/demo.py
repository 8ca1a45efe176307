"""The demo message that `tracker run` seeds: a profile, a list, and an email with two tracked links.

Seeded once per database: a later `tracker run` on the same database finds the
message by its name and list (`Demo: welcome` in `Demo newsletter`) and reuses
it, so reports and `tracker stats` do not fill up with copies. Its content gets
a new link-table version only when the demo itself changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from tracker.config import Settings
from tracker.contract.tokens import Channel, TokenKind, mint
from tracker.domain.messages import register_message, register_version

DEMO_EMAIL = "demo.recipient@example.com"
DEMO_LIST = "Demo newsletter"
DEMO_MESSAGE = "Demo: welcome"
# Two `tracker run`s starting at once on one database must not both register it.
_SEED_LOCK = 0x74726B64656D6F  # "trkdemo"


@dataclass(frozen=True)
class DemoMessage:
    message_id: int
    profile_id: int
    open_url: str
    click_urls: list[str]
    reused: bool = False  # registered by an earlier run on this database


def demo_html(resource_id: int) -> str:
    # Registered from HTML as a sender would, so that `tracker render` can render it too.
    return ('<html><body><p>Welcome to the demo.</p>'
            '<a href="https://example.com/welcome?utm_source=demo" update-clicked_link="true">Welcome</a> '
            f'<a href="https://example.com/pricing" subscribe-to="{resource_id}">Pricing</a>'
            '<p><a href="{{unsubscribe_url}}">Unsubscribe</a></p></body></html>')  # fmt: skip


async def seed_demo(settings: Settings) -> DemoMessage:
    """Create (or reuse) the demo profile, list and message."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction():
            await conn.execute("select pg_advisory_xact_lock($1)", _SEED_LOCK)
            await conn.execute(
                "insert into profile_fields (name, type) values ('clicked_link', 'boolean') on conflict do nothing"
            )
            profile_id = await conn.fetchval(
                "insert into profiles (email) values ($1)"
                " on conflict (email) do update set updated_at = now() returning id",
                DEMO_EMAIL,
            )
            resource_id = await conn.fetchval("select id from resources where name = $1", DEMO_LIST)
            if resource_id is None:
                resource_id = await conn.fetchval(
                    "insert into resources (name, channel) values ($1, 'email') returning id", DEMO_LIST
                )
            message_id, version, links, reused = await _demo_message(conn, resource_id)
    finally:
        await conn.close()
    keys, kid, base = settings.signing_keys, settings.active_key_id, settings.public_url
    open_token = mint(keys, kid, TokenKind.OPEN, Channel.EMAIL, message_id, profile_id)
    clicks = [
        f"{base}/c/{mint(keys, kid, TokenKind.CLICK, Channel.EMAIL, message_id, profile_id, version, index)}"
        for index in range(links)
    ]
    return DemoMessage(message_id, profile_id, f"{base}/o/{open_token}.gif", clicks, reused)


async def _demo_message(conn: asyncpg.Connection, resource_id: int) -> tuple[int, int, int, bool]:
    """(message id, current version, its number of links, reused) of the demo message, registered if new."""
    html = demo_html(resource_id)
    found = await conn.fetchrow(
        "select m.id, m.current_version, v.content from messages m"
        " join link_table_versions v on v.message_id = m.id and v.version = m.current_version"
        " where m.name = $1 and m.resource_id = $2 and m.channel = 'email' order by m.id limit 1",
        DEMO_MESSAGE, resource_id,
    )  # fmt: skip
    if found is None:
        registered = await register_message(conn, "email", DEMO_MESSAGE, html, resource_id)
        return registered.message_id, registered.version, len(registered.links), False
    if found["content"] != html:  # the demo changed since it was registered: its new content, same message
        registered = await register_version(conn, found["id"], html)
        return registered.message_id, registered.version, len(registered.links), True
    links = await conn.fetchval(
        "select count(*) from links where message_id = $1 and version = $2", found["id"], found["current_version"]
    )
    return found["id"], found["current_version"], links, True

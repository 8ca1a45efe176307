"""The demo message that `tracker run` seeds: a profile, a list, and an email with two tracked links."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from tracker.config import Settings
from tracker.contract.tokens import Channel, TokenKind, mint
from tracker.domain.messages import register_message

DEMO_EMAIL = "demo.recipient@example.com"


@dataclass(frozen=True)
class DemoMessage:
    message_id: int
    profile_id: int
    open_url: str
    click_urls: list[str]


async def seed_demo(settings: Settings) -> DemoMessage:
    """Create (or reuse) the demo profile and list, and register a new demo message."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction():
            await conn.execute(
                "insert into profile_fields (name, type) values ('clicked_link', 'boolean') on conflict do nothing"
            )
            profile_id = await conn.fetchval(
                "insert into profiles (email) values ($1)"
                " on conflict (email) do update set updated_at = now() returning id",
                DEMO_EMAIL,
            )
            resource_id = await conn.fetchval("select id from resources where name = 'Demo newsletter'")
            if resource_id is None:
                resource_id = await conn.fetchval(
                    "insert into resources (name, channel) values ('Demo newsletter', 'email') returning id"
                )
            # Registered from HTML as a sender would, so that `tracker render` can render it too.
            html = ('<html><body><p>Welcome to the demo.</p>'
                    '<a href="https://example.com/welcome?utm_source=demo" update-clicked_link="true">Welcome</a> '
                    f'<a href="https://example.com/pricing" subscribe-to="{resource_id}">Pricing</a>'
                    '<p><a href="{{unsubscribe_url}}">Unsubscribe</a></p></body></html>')  # fmt: skip
            registered = await register_message(conn, "email", "Demo: welcome", html, resource_id)
            message_id, version, links = registered.message_id, registered.version, registered.links
    finally:
        await conn.close()
    keys, kid, base = settings.signing_keys, settings.active_key_id, settings.public_url
    open_token = mint(keys, kid, TokenKind.OPEN, Channel.EMAIL, message_id, profile_id)
    clicks = [
        f"{base}/c/{mint(keys, kid, TokenKind.CLICK, Channel.EMAIL, message_id, profile_id, version, index)}"
        for index in range(len(links))
    ]
    return DemoMessage(message_id, profile_id, f"{base}/o/{open_token}.gif", clicks)

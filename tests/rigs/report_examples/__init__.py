"""The providers' example payloads (files in this folder) and a few helpers the webhook tests share."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis.asyncio import Redis

from tests.rigs.edge_helpers import stream_events
from tracker.config import Settings
from tracker.contract.tokens import Channel, TokenKind, mint

HERE = Path(__file__).parent


def example(name: str, ref: str = "") -> bytes:
    """An example file, without its final newline, with `{{tracker_ref}}` replaced by `ref`."""
    return (HERE / name).read_text().rstrip("\n").replace("{{tracker_ref}}", ref).encode()


def mint_ref(settings: Settings, channel: Channel, message_id: int, profile_id: int) -> str:
    """The X-Tracker-Ref the renderer puts on a message."""
    return mint(settings.signing_keys, 1, TokenKind.REF, channel, message_id, profile_id)


async def assert_no_events(redis: Redis, settings: Settings, wait: float = 0.05) -> None:
    await asyncio.sleep(wait)  # several batch ages: anything buffered would be written by now
    assert await stream_events(redis, settings) == []

"""The read beacon, through a real Granian edge: dwell time is known when the client goes away."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from edge.responses import GIF
from tests.rigs.edge_helpers import real_edge, stream_events, wait_for_events
from tracker.contract.tokens import Channel, TokenKind, mint

QUICK = {"TRACKER_READ_MIN_S": "0.5", "TRACKER_READ_MAX_S": "2.0", "TRACKER_READ_TICK_S": "0.1"}


@pytest.fixture
async def edge_url(settings, free_port):
    async with real_edge(settings, free_port, **QUICK):
        yield f"http://127.0.0.1:{free_port}"


def read_path(settings, profile_id: int) -> str:
    return "/r/" + mint(settings.signing_keys, 1, TokenKind.READ, Channel.EMAIL, 61, profile_id)


async def hold(url: str, seconds: float) -> bytes:
    """Open the beacon and stay `seconds` (or until it completes); return what arrived."""
    received = b""
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("GET", url) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "image/gif"
            deadline = time.monotonic() + seconds
            async for chunk in response.aiter_raw():
                received += chunk
                if time.monotonic() >= deadline:
                    break
    return received


async def test_a_reader_who_stays_gets_the_whole_gif_and_a_read_event(settings, redis, edge_url) -> None:
    started = time.monotonic()
    body = await hold(edge_url + read_path(settings, 1), seconds=30)
    assert body == GIF
    assert 1.9 <= time.monotonic() - started < 4
    [event] = await wait_for_events(redis, settings, 1)
    assert (event.kind, event.message_id, event.profile_id) == ("read", 61, 1)
    assert 1.9 <= event.data["dwell_s"] <= 2.5


async def test_a_reader_who_leaves_after_the_minimum_is_recorded_with_the_dwell(settings, redis, edge_url) -> None:
    body = await hold(edge_url + read_path(settings, 2), seconds=1.0)
    assert GIF.startswith(body) and len(body) < len(GIF)  # the image was still loading
    [event] = await wait_for_events(redis, settings, 1)
    assert event.kind == "read" and 0.9 <= event.data["dwell_s"] <= 1.6


async def test_a_glance_shorter_than_the_minimum_records_nothing(settings, redis, edge_url) -> None:
    await hold(edge_url + read_path(settings, 3), seconds=0.2)
    await asyncio.sleep(0.8)
    assert await stream_events(redis, settings) == []


async def test_bad_tokens_and_head_get_a_plain_gif_at_once(settings, redis, edge_url) -> None:
    open_token = "/r/" + mint(settings.signing_keys, 1, TokenKind.OPEN, Channel.EMAIL, 61, 4)
    async with httpx.AsyncClient(base_url=edge_url, timeout=5) as http:
        for path in ("/r/garbage", open_token):
            response = await http.get(path)
            assert response.content == GIF and response.headers["content-length"] == "43"
        head = await http.head(read_path(settings, 4))
        assert head.status_code == 200
    await asyncio.sleep(0.3)
    assert await stream_events(redis, settings) == []

"""A client that goes away in the middle of a hook's body costs one short log line, not a traceback each."""

from __future__ import annotations

import logging

import asyncpg

from tests.rigs.edge_helpers import running_edge
from tests.rigs.hook_helpers import hook_settings, no_hooks_left  # noqa: F401
from tracker.domain.api_keys import create_api_key


async def aborted_upload(app, key: str, path: str = "/api/v1/hooks") -> list[dict]:
    """POST `path` declaring 4 kB, send 20 bytes, then disconnect; what the app sent back."""
    messages = iter([
        {"type": "http.request", "body": b'{"name": "half a bo', "more_body": True},
        {"type": "http.disconnect"},
    ])  # fmt: skip
    sent: list[dict] = []

    async def receive() -> dict:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": [(b"host", b"edge.test"), (b"authorization", f"Bearer {key}".encode()),
                    (b"content-type", b"application/json"), (b"content-length", b"4096")],
        "client": ("203.0.113.9", 40000), "server": ("edge.test", 80), "state": {},
    }  # fmt: skip
    await app(scope, receive, send)
    return sent


async def test_aborted_uploads_log_one_short_line_sampled_and_no_traceback(settings, redis, caplog):
    settings = hook_settings(settings)
    conn = await asyncpg.connect(settings.database_url)
    try:
        key = (await create_api_key(conn, "uploads", ["read", "write"]))[0]
    finally:
        await conn.close()
    caplog.set_level(logging.INFO)
    async with running_edge(settings) as (app, _client):
        for _ in range(20):
            await aborted_upload(app, key)
        await aborted_upload(app, key, "/api/v1/hooks/1/replay")
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage()[:200] for r in caplog.records]
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == ["API POST /api/v1/hooks: client went away before sending the body"]

"""Report bodies cannot exhaust an edge's memory: refusals before the body, a budget of bytes in flight, a deadline.

Against a real Granian `edge` process and raw sockets, since what matters is what happens to
connections whose bodies arrive slowly or never.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.rigs.edge_helpers import real_edge

MAILGUN = {"TRACKER_REPORT_MAILGUN_SIGNING_KEY": "key-mailgun-signing-0123456789abcdef"}
POSTMARK = {"TRACKER_REPORT_POSTMARK_BASIC_AUTH": "postmark:pm-password-0123456789"}


async def start_upload(port: int, path: str, declared: int, content_type: str = "application/json",
                       first: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST {path} HTTP/1.1\r\nHost: edge\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {declared}\r\n\r\n")  # fmt: skip
    writer.write(head.encode() + first)
    await writer.drain()
    return reader, writer


async def response_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status and headers of the answer (waits at most 10 s: a hang fails the test, it does not time it)."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = raw.decode().split("\r\n")
    headers = {}
    for line in filter(None, lines):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        while await asyncio.wait_for(reader.read(65536), 10):
            pass
    except (ConnectionError, TimeoutError):
        return False
    return True


def close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()


async def test_refusals_that_headers_decide_come_before_a_byte_of_the_body(settings, free_port):
    async with real_edge(settings, free_port, **MAILGUN, **POSTMARK):
        # 1 MiB declared, nothing sent: the answer cannot have waited for the body.
        no_auth = await start_upload(free_port, "/reports/email/postmark", 1_000_000)
        wrong_type = await start_upload(free_port, "/reports/email/mailgun", 1_000_000, "text/plain")
        too_big = await start_upload(free_port, "/reports/email/mailgun", 50 * 2**20)
        answers = [await response_head(reader) for reader, _ in (no_auth, wrong_type, too_big)]
        for _, writer in (no_auth, wrong_type, too_big):
            close(writer)
    assert [status for status, _ in answers] == [401, 415, 413]
    assert all(headers.get("connection") == "close" for _, headers in answers)


async def test_uploads_over_the_budget_get_503_and_a_stalled_one_gives_its_share_back_after_408(settings, free_port):
    limits = {"TRACKER_REPORT_MAX_BODY_BYTES": "65536", "TRACKER_REPORT_UPLOAD_BUDGET_BYTES": "100000",
              "TRACKER_REPORT_BODY_TIMEOUT_S": "1"}  # fmt: skip
    async with real_edge(settings, free_port, **MAILGUN, **limits):
        stalled_reader, stalled = await start_upload(free_port, "/reports/email/mailgun", 60_000, first=b"{")
        await asyncio.sleep(0.2)  # the edge has reserved the stalled upload's 60 000 bytes
        busy_reader, busy = await start_upload(free_port, "/reports/email/mailgun", 60_000)
        busy_status, busy_headers = await response_head(busy_reader)
        stalled_status, stalled_headers = await response_head(stalled_reader)  # after the 1 s deadline
        stalled_closed = await closed_by_server(stalled_reader)
        body = b'{"signature": {"timestamp": "1", "token": "t", "signature": "s"}, "event-data": {}}'
        later_reader, later = await start_upload(free_port, "/reports/email/mailgun", len(body), first=body)
        later_status, _ = await response_head(later_reader)
        for writer in (stalled, busy, later):
            close(writer)
    assert busy_status == 503 and busy_headers["retry-after"] == "1"
    assert stalled_status == 408 and stalled_headers.get("connection") == "close" and stalled_closed
    assert later_status == 401  # read (the budget was given back) and refused for its signature


async def test_a_body_trickled_byte_by_byte_gets_408_and_its_connection_is_closed(settings, free_port):
    async with real_edge(settings, free_port, **MAILGUN, TRACKER_REPORT_BODY_TIMEOUT_S="0.5"):
        reader, writer = await start_upload(free_port, "/reports/email/mailgun", 1000)
        answer = asyncio.ensure_future(response_head(reader))
        sent = 0
        while not answer.done() and sent < 100:  # one byte every 0.1 s: 100 s for the whole body
            writer.write(b" ")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            sent += 1
            await asyncio.sleep(0.1)
        status, headers = await answer
        closed = await closed_by_server(reader)
        close(writer)
    assert status == 408 and sent < 100
    assert headers.get("connection") == "close" and closed

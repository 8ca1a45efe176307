"""`/r/{token}`: the read beacon, a GIF that loads slowly for as long as the message stays open.

The response drips the GIF one byte at a time and completes only at
`read_max_s`; when the mail client closes the message, it drops the connection
and the dwell time is known. A dwell of at least `read_min_s` records `read`
with the seconds. A held read costs one suspended coroutine and a timer: no
thread, no polling of the socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from edge import responses
from edge.capture import Capture
from tracker.config import Settings
from tracker.contract.tokens import Keyring, TokenKind, verify

log = logging.getLogger("edge.read")
_READ = int(TokenKind.READ)
GIF = responses.GIF

# No content-length: the body is sent in pieces (chunked) until the GIF is whole.
_HELD_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"image/gif"), *responses.NO_CACHE],
}


class ReadBeacon:
    def __init__(self, keys: Keyring, capture: Capture, settings: Settings, counters: Any) -> None:
        self.keys = keys
        self.capture = capture
        self.counters = counters
        self.min_s = settings.edge.read_min_s
        self.max_s = settings.edge.read_max_s
        # Never run out of GIF bytes before the maximum hold.
        self.tick_s = max(settings.edge.read_tick_s, settings.edge.read_max_s / (len(GIF) - 2))

    async def __call__(self, scope: dict, receive: Any, send: Any, token_text: str) -> None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            start, body = responses.METHOD_NOT_ALLOWED
            await send(start)
            return await send(body)
        token = verify(self.keys, token_text)
        if token is None or token[0] != _READ or method == "HEAD":
            if method == "GET":
                self.counters.bad_tokens += 1
            await send(responses.GIF_START)
            return await send(responses.GIF_BODY if method == "GET" else responses.EMPTY_BODY)
        await receive()  # the (empty) request body; the next message is the disconnect
        started = time.monotonic()
        self.counters.held_reads += 1
        gone = asyncio.ensure_future(receive())
        stayed = False
        try:
            await send(_HELD_START)
            await send({"type": "http.response.body", "body": GIF[:1], "more_body": True})
            sent = 1
            while True:
                left = self.max_s - (time.monotonic() - started)
                if left <= 0:
                    stayed = True
                    break
                done, _ = await asyncio.wait((gone,), timeout=min(self.tick_s, left))
                if done:
                    break
                if sent < len(GIF) - 1:
                    await send({"type": "http.response.body", "body": GIF[sent : sent + 1], "more_body": True})
                    sent += 1
            if stayed:
                await send({"type": "http.response.body", "body": GIF[sent:], "more_body": False})
        except (OSError, RuntimeError) as exc:
            # The client went away between two bytes; the server says so through send.
            log.debug("read beacon: client gone (%r)", exc)
        finally:
            self.counters.held_reads -= 1
            gone.cancel()
            dwell = time.monotonic() - started
            if dwell >= self.min_s:
                self.capture("read", token[1], token[2], token[3], scope, data={"dwell_s": round(dwell, 1)})

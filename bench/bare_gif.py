"""Baseline: the least an ASGI app on Granian can do for a pixel.

Every request gets the same 43-byte GIF and the same headers as the edge's
open pixel, built once, sent with two `send` calls and nothing else: no
routing, no token check, no event. The edge's `/o/` is measured against this.

    granian --interface asgi --loop uvloop --workers 1 bench.bare_gif:app
"""

from __future__ import annotations

from typing import Any

from edge.responses import GIF_BODY, GIF_START


async def app(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(GIF_START)
    await send(GIF_BODY)

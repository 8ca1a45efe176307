"""`/metrics` and `/health/deps` behind `TRACKER_OPS_TOKEN` (sent as `Authorization: Bearer <token>`), when set.

They tell an operator what a stranger should not learn: the spool's path, Redis' memory, event
counts, consumer and hook names. `/health` and `/ready` stay open: load balancers and orchestrators
probe them without credentials, and they say no more than "up" and "can take traffic". With the
setting empty both stay open (local runs, tests, a private listener); production sets it
(README, "Which routes to expose").
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

Endpoint = Callable[[Request], Awaitable[Response]]
_REFUSED_HEADERS = {"www-authenticate": 'Bearer realm="tracker-ops"', "cache-control": "no-store"}


def ops_only(endpoint: Endpoint, token: str) -> Endpoint:
    """`endpoint`, answering 401 unless the request carries `token` (as it is when `token` is empty)."""
    if not token:
        return endpoint
    expected = token.encode()

    async def guarded(request: Request) -> Response:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Constant time: the comparison must not tell how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            return PlainTextResponse("send the ops token (TRACKER_OPS_TOKEN) as `Authorization: Bearer ...`\n",
                                     401, headers=_REFUSED_HEADERS)  # fmt: skip
        return await endpoint(request)

    guarded.__name__ = getattr(endpoint, "__name__", "ops_endpoint")
    return guarded

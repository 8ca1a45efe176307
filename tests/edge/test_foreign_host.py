"""No answer borrows the request's Host: every route, with and without a trailing slash, under a foreign Host.

Starlette answered `/reports/email/sendgrid/` (and `/api/v1`, `/hooks/.../`, ...) with a 307 whose
Location was built from the Host header: a redirect to any host a client names. The edge serves a
path as it is spelled, or not at all; its own links come from TRACKER_PUBLIC_URL.
"""

from __future__ import annotations

import re

from starlette.routing import Mount, Route

from tests.rigs.api_helpers import OPENAPI, running_api
from tests.rigs.flusher_helpers import make_message, make_profiles, make_resource
from tracker.contract.tokens import Channel, TokenKind, mint

FOREIGN = "evil.example"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")


def _paths(app, ids: dict[str, str], tokens: list[str]) -> list[str]:
    """Every route of the edge with its parameters filled in: the Starlette app's, the API's, the tracking ones."""
    paths = ["/", "/api", "/api/v1", "/api/v1/openapi.json", "/ak.js", "/ak/e", "/s/abcdef", "/s/Zz9Zz9Zz"]
    for route in app.app.routes:
        if isinstance(route, Route):
            paths.append(route.path)
        elif isinstance(route, Mount):
            paths.append(route.path)
    paths += list(OPENAPI["paths"])
    for token in tokens:
        paths += [f"/{route}/{token}" for route in ("o", "c", "u", "cf", "r")]
        paths += [f"/o/{token}.gif", f"/u/{token}/preferences"]
        paths += [f"/p/{token}/{action}" for action in ("ack", "open", "click")]
    fill = {"channel": "email", "provider": "sendgrid", **ids}
    return [re.sub(r"\{(\w+)(:\w+)?\}", lambda m: fill.get(m.group(1), "1"), path) for path in paths]


async def test_a_foreign_host_is_in_no_header_or_body_of_any_route(settings, pg) -> None:
    (profile,) = await make_profiles(pg, 1)
    message, resource = await make_message(pg), await make_resource(pg)
    ids = {"profile_id": str(profile), "message_id": str(message), "resource_id": str(resource)}
    keys = dict(settings.signing_keys)
    tokens = ["not-a-token"] + [
        mint(keys, 1, kind, Channel.EMAIL, message, profile, 1, 0)
        for kind in (TokenKind.OPEN, TokenKind.CLICK, TokenKind.UNSUBSCRIBE, TokenKind.CONFIRM, TokenKind.PUSH)
    ]
    settings = settings.replace(edge={"read_max_s": 1.0, "read_tick_s": 0.5})
    async with running_api(settings) as api:
        app = api.client._transport.app  # type: ignore[attr-defined]
        answered = 0
        for path in sorted(set(_paths(app, ids, tokens))):
            for spelled in {path, path.rstrip("/") + "/", path.rstrip("/") or "/"}:
                for method in METHODS:
                    if spelled.startswith("/r/") and method == "GET":
                        continue  # a held read beacon (its HEAD answers at once)
                    response = await api.client.request(method, spelled, headers={**api.auth(), "host": FOREIGN})
                    answered += 1
                    where = f"{method} {spelled} -> {response.status_code}"
                    assert response.status_code < 500, where
                    assert not (300 <= response.status_code < 400) or "location" in response.headers, where
                    assert FOREIGN not in str(response.headers.raw).lower(), where
                    assert FOREIGN.encode() not in response.content.lower(), where
        # Trailing-slash spellings are answered as they are (404 or 405), never redirected.
        for path in ("/reports/email/sendgrid/", "/hooks/email/sendgrid/", f"/reports/messages/{message}/",
                     "/api/v1/resources/", "/api/v1", "/api/v1/"):  # fmt: skip
            response = await api.client.get(path, headers={"host": FOREIGN})
            assert response.status_code in (404, 405) and "location" not in response.headers, path
    assert answered > 500

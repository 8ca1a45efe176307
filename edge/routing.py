"""Routes whose path parameters must pass a check to match, and one route per path for all its methods.

Starlette matches `{name}` to any segment: `/profiles/import` then matches `/profiles/{profile_id}`
for every method, so a PATCH to it was a 404 ("profile_id 'import'") where HTTP wants the 405 that
the path's own route (POST only) gives. A `CheckedRoute` matches only when each checked parameter
passes. `methods_route` serves every method of a path from one route, so a method the path lacks
is a 405 whose `Allow` lists them all (a route per method answered with its own method only).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from tracker.contract.numbers import MAX_ID, parse_int

Endpoint = Callable[[Request], Awaitable[Response]]


def is_id(text: str) -> bool:
    """A positive id spelled the one way (ASCII digits, no leading zero), within a bigint."""
    return parse_int(text, 1, MAX_ID) is not None


class CheckedRoute(Route):
    """A `Route` that matches only when `checks[name](value)` holds for each checked path parameter."""

    def __init__(self, path: str, endpoint: Endpoint, *, methods: list[str],
                 checks: Mapping[str, Callable[[str], bool]]) -> None:  # fmt: skip
        super().__init__(path, endpoint, methods=methods)
        self.checks = dict(checks)

    def matches(self, scope: Any) -> tuple[Match, Any]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            params = child_scope["path_params"]
            if not all(check(params[name]) for name, check in self.checks.items()):
                return Match.NONE, {}
        return match, child_scope


def methods_route(path: str, handlers: Mapping[str, Endpoint]) -> CheckedRoute:
    """One route serving `handlers` (method -> endpoint; HEAD as GET); every `{..._id}` must be an id."""
    by_method = dict(handlers)
    if "GET" in by_method:
        by_method.setdefault("HEAD", by_method["GET"])

    async def dispatch(request: Request) -> Response:
        return await by_method[request.method](request)

    ids = {name: is_id for name in re.findall(r"\{(\w+)\}", path) if name.endswith("_id")}
    return CheckedRoute(path, dispatch, methods=list(by_method), checks=ids)

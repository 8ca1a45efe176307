"""Helpers for the API tests: an edge with API keys, and responses checked against the OpenAPI schema."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import jsonschema

from edge.api import ENDPOINTS
from edge.api.openapi import build_openapi
from tests.rigs.edge_helpers import running_edge
from tracker.config import Settings
from tracker.domain.api_keys import create_api_key

OPENAPI = build_openapi(ENDPOINTS)


@dataclass
class Api:
    """An HTTP client for the in-process edge and keys of each scope."""

    client: httpx.AsyncClient
    keys: dict[str, str]  # "rw", "read", "write"

    def auth(self, which: str = "rw") -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[which]}"}

    async def call(self, method: str, path: str, key: str = "rw", **kwargs: Any) -> httpx.Response:
        """A request with a key; the response is checked against the schema of its operation."""
        headers = {**self.auth(key), **kwargs.pop("headers", {})}
        response = await self.client.request(method, "/api/v1" + path, headers=headers, **kwargs)
        check_against_schema(method, path, response)
        return response


@asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[Api]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        keys = {
            "rw": (await create_api_key(conn, "tests rw", ["read", "write"]))[0],
            "read": (await create_api_key(conn, "tests read", ["read"]))[0],
            "write": (await create_api_key(conn, "tests write", ["write"]))[0],
        }
    finally:
        await conn.close()
    async with running_edge(settings) as (_app, client):
        yield Api(client, keys)


def _operation(method: str, path: str) -> dict[str, Any]:
    bare = path.split("?", 1)[0]
    for template, operations in OPENAPI["paths"].items():
        pattern = "^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template.removeprefix("/api/v1"))) + "$"
        if re.match(pattern, bare) and method.lower() in operations:
            return operations[method.lower()]
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def check_against_schema(method: str, path: str, response: httpx.Response) -> None:
    """The status is documented for the operation and the JSON body validates against its schema."""
    operation = _operation(method, path)
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"{method} {path} answered {response.status_code}, not in the schema"
    content = documented.get("content")
    if content is None:
        assert response.content == b""
        return
    schema = {**content["application/json"]["schema"], "components": OPENAPI["components"]}
    jsonschema.Draft202012Validator(schema).validate(response.json())

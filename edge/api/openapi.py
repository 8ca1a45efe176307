"""The OpenAPI 3.1 document, built from the endpoint declarations and the msgspec Structs."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from edge.api import hook_schemas, schemas
from edge.api._http import Endpoint

_REF = "#/components/schemas/{name}"
COMPONENTS = (*schemas.COMPONENTS, *hook_schemas.COMPONENTS)
_STATUS_TEXT = {
    400: "Malformed request (bad JSON or CSV, with the position)",
    401: "Missing or wrong API key",
    403: "The key lacks the scope",
    404: "Not found",
    409: "Conflicts with existing data (duplicate email, phone, external id or name) or state (a paused hook)",
    413: "Body larger than the configured limit",
    415: "Unsupported body format",
    422: "Invalid values (the message names the field and the problem)",
    429: "Too many at once (hook tests): retry later",
    503: "Unavailable: the database, or a setting the operation needs (the message says which)",
}


def _schema_ref(struct: type) -> dict[str, str]:
    return {"$ref": _REF.format(name=struct.__name__)}


def _query_schema(declared: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: as declared when it has a type (an integer), else a string.

    Every value must be non-empty: `name=` is refused (422, leave it out for the default), as
    `edge.api._http.wrap` does for every declared parameter, and the schema says so.
    """
    if "type" in declared:
        return declared
    return {"type": "string", "minLength": 1, "pattern": schemas.NO_NUL, **declared}


def build_openapi(endpoints: list[Endpoint], title: str = "Tracking edge API", version: str = "1") -> dict[str, Any]:
    _, components = msgspec.json.schema_components(COMPONENTS, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    error = {"application/json": {"schema": _schema_ref(schemas.ErrorBody)}}
    for ep in endpoints:
        operation: dict[str, Any] = {
            "operationId": ep.handler.__name__,
            "summary": ep.summary,
            "security": [{"apiKey": []}],
            "x-required-scope": ep.scope,
            "responses": {},
        }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
            for name in re.findall(r"\{(\w+)\}", ep.path)
            if name.endswith("_id")
        ]
        parameters += [
            {"name": name, "in": "query", "required": name in ep.required_query, "description": doc,
             "schema": _query_schema(value[0] if value else {})}
            for name, doc, *value in ep.query
        ]  # fmt: skip
        if parameters:
            operation["parameters"] = parameters
        if ep.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {media: {"schema": _schema_ref(ep.request)} for media in ep.request_media},
            }
        elif ep.request_media != ("application/json",):
            operation["requestBody"] = {
                "required": True,
                "content": {media: {"schema": {"type": "string"}} for media in ep.request_media},
            }
        if ep.response is None:
            operation["responses"][str(ep.status)] = {"description": "Done, no body"}
        else:
            operation["responses"][str(ep.status)] = {
                "description": "Success",
                "content": {"application/json": {"schema": _schema_ref(ep.response)}},
            }
        for status in sorted({401, 403, 503, *ep.errors}):
            operation["responses"][str(status)] = {"description": _STATUS_TEXT[status], "content": error}
        paths.setdefault("/api/v1" + ep.path, {})[ep.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Profiles, subscriptions and messages of the tracking edge. Every error body is "
            '{"error": {"code": "...", "message": "..."}}.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "a key from `tracker create-api-key`"}
            },
        },
    }

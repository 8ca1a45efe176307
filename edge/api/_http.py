"""What every API endpoint shares: the declaration, authentication, bodies, JSON and errors.

Each endpoint is declared once as an `Endpoint`; the router and the OpenAPI
document are both built from those declarations. A handler gets a Postgres
connection already holding the authenticated key's request, and raises
`InputError` for anything the caller got wrong.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from edge.api._errors import plain_validation_message
from edge.api.schemas import NO_NUL, ErrorBody, ErrorDetail
from edge.log_limit import LogLimiter
from edge.state import EdgeState
from tracker.contract.numbers import MAX_ID, content_length, parse_int
from tracker.domain.api_keys import check_api_key
from tracker.domain.errors import InputError
from tracker.domain.render import TemplateCache

log = logging.getLogger("edge.api")
T = TypeVar("T")
_encode = msgspec.json.Encoder().encode
_UNIQUE_CODES = {
    "profiles_email_key": ("duplicate_email", "another profile has this email address"),
    "profiles_phone_key": ("duplicate_phone", "another profile has this phone number"),
    "profiles_external_id_key": ("duplicate_external_id", "another profile has this external id"),
    "profile_fields_pkey": ("duplicate_field", "a profile field with this name exists"),
}


class ApiContext:
    """What handlers need from the edge: pools, settings, and compiled templates."""

    def __init__(self, state: EdgeState) -> None:
        self.state = state
        self.settings = state.settings
        self.templates = TemplateCache()
        # Clients that go away mid-body are not our failure: one short line a minute, with a count.
        self.disconnects = LogLimiter(logging.getLogger("edge.api.disconnects"), every_s=60.0)

    @property
    def redis(self) -> Any:
        return self.state.redis


Handler = Callable[[Request, asyncpg.Connection, ApiContext], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    scope: str  # "read" or "write"
    summary: str
    request: type | None = None
    response: type | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    # (name, description) of optional string parameters, or (name, description, JSON schema of the value)
    query: tuple[tuple[str, str] | tuple[str, str, dict[str, Any]], ...] = ()
    request_media: tuple[str, ...] = ("application/json",)
    required_query: tuple[str, ...] = ()  # names of `query` a request must give


def json_response(value: Any, status: int = 200) -> Response:
    return Response(_encode(value), status, media_type="application/json")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(ErrorBody(ErrorDetail(code, message))), status, headers, "application/json")


def wrap(endpoint: Endpoint, ctx: ApiContext) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        scheme, _, key_text = auth.partition(" ")
        if scheme.lower() != "bearer" or not key_text.strip():
            return _unauthorized("send an API key as `Authorization: Bearer trk_...`")
        if endpoint.query:
            declared = {name for name, *_ in endpoint.query}
            for name, value in request.query_params.multi_items():
                if name not in declared:  # as with body fields: a typo is a 422, not silently ignored
                    return error_response(422, "unknown_query", f"unknown query parameter {name[:40]!r}")
                if "\x00" in value:
                    return error_response(422, "invalid_text", f"query parameter {name} must not contain NUL")
                if not value:  # `name=` is not a default: one spelling of "absent" (the schema's minLength)
                    return error_response(422, "invalid_parameter",
                                          f"query parameter {name}: is empty (leave it out for the default)")
        pool = ctx.state.pg_pool
        assert pool is not None, "API used outside the edge lifespan"
        try:
            async with pool.acquire() as conn:
                key = await check_api_key(conn, key_text.strip())
                if key is None:
                    return _unauthorized("the API key is unknown, revoked or wrong")
                if endpoint.scope not in key.scopes:
                    has = ", ".join(sorted(key.scopes))
                    return error_response(403, "forbidden", f"this key lacks the {endpoint.scope} scope (it has {has})")
                return await endpoint.handler(request, conn, ctx)
        except InputError as exc:
            return error_response(exc.status, exc.code, exc.message)
        except ClientDisconnect:
            ctx.disconnects.log(logging.WARNING, "gone", "API %s %s: client went away before sending the body",
                                request.method, request.url.path)  # fmt: skip
            return error_response(400, "client_disconnected", "the client went away before the body was read")
        except asyncpg.UniqueViolationError as exc:
            code, message = _UNIQUE_CODES.get(
                exc.constraint_name or "", ("conflict", "the change conflicts with existing data")
            )
            return error_response(409, code, message)
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("API %s %s: database unavailable: %s", endpoint.method, endpoint.path, exc)
            return error_response(503, "unavailable", "the database is unavailable; retry later", {"retry-after": "5"})
        except Exception:
            # Still a JSON error for the caller; the traceback is for the operator's log.
            log.exception("API %s %s failed", endpoint.method, endpoint.path)
            return error_response(500, "internal_error", "the request failed on the server; it was logged")

    run.__name__ = endpoint.handler.__name__
    return run


def _unauthorized(message: str) -> Response:
    return error_response(401, "unauthorized", message, {"www-authenticate": 'Bearer realm="tracker"'})


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {
        404: ("not_found", "no such API route"),
        405: ("method_not_allowed", "this route does not take that method"),
    }
    code, message = codes.get(exc.status_code, ("http_error", str(exc.detail)))
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))


async def limited_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body chunk by chunk; 413 as soon as it (or its declared length) passes `limit`."""
    declared = content_length(request.headers.get("content-length", ""), limit)
    if declared is not None and declared > limit:
        raise InputError("body_too_large", f"the request body is larger than {limit} bytes", 413)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError("body_too_large", f"the request body is larger than {limit} bytes", 413)
        if chunk:
            yield chunk


async def read_json(request: Request, ctx: ApiContext, type_: type[T]) -> T:
    body = b"".join([chunk async for chunk in limited_stream(request, ctx.settings.edge.api_max_body_bytes)])
    if not body.strip():
        raise InputError("empty_body", "the request needs a JSON body", 400)
    try:
        try:
            value = msgspec.json.decode(body, type=type_)
        except msgspec.ValidationError as exc:
            if "got `float`" not in str(exc):
                raise
            # JSON has one number type: 5.0 is the integer 5 to JSON Schema (and to clients that
            # print every number with a decimal point). Only this error path pays for a second decode.
            value = msgspec.convert(_integral_floats(msgspec.json.decode(body)), type_)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if repr(NO_NUL) in text:  # msgspec quotes the pattern as repr() does
            raise InputError("invalid_text", plain_validation_message(type_, text)) from None
        code = "unknown_field" if "unknown field" in text else "invalid_request"
        raise InputError(code, plain_validation_message(type_, text)) from None
    except msgspec.DecodeError as exc:
        text = str(exc)
        # msgspec names the byte for bad characters but not for a body that stops early.
        position = "" if "(byte" in text else f" (at byte {len(body)}, the end of the body)"
        raise InputError("malformed_json", text + position, 400) from None
    if b"\\u0000" in body:  # JSON can only carry a NUL escaped; look where, past the typed fields
        where = nul_path(msgspec.to_builtins(value), "$")
        if where is not None:
            raise InputError("invalid_text", f"text must not contain NUL (\\u0000) characters - at `{where}`")
    return value


def nul_path(value: Any, path: str) -> str | None:
    """Where in decoded JSON a string (value or key) holds a NUL, which Postgres text refuses; None: nowhere."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return path
            found = nul_path(item, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _integral_floats(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral_floats(item) for item in value]
    return value


def path_id(request: Request, name: str) -> int:
    """An id from the path; the route matched only ids (edge.routing), so this is the number it spells."""
    raw = request.path_params[name]
    value = parse_int(raw, 1, MAX_ID)
    if value is None:
        raise InputError("invalid_id", f"{name} {raw[:40]!r} is not a positive integer id", 404)
    return value

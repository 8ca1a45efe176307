"""Profiles and profile fields: create, read, look up, partial update, delete; declare fields."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from edge.api._http import ApiContext, json_response, path_id, read_json
from edge.api.schemas import Profile, ProfileField, ProfileFieldIn, ProfileFieldList, ProfileIn, ProfilePatch
from tracker.domain.errors import InputError, NotFound
from tracker.domain.profile_fields import (
    BUILTIN_FIELDS,
    FieldSpec,
    check_declaration,
    check_email,
    check_external_id,
    check_phone,
    check_status,
    check_value,
    load_fields,
)

COLUMNS = "id, external_id, email, phone, email_status, phone_status, fields::text as fields, created_at, updated_at"
_CHECKS = {"email": check_email, "phone": check_phone, "external_id": check_external_id}
LOOKUP_KEYS = ("email", "phone", "external_id")


def profile_of(row: Any) -> Profile:
    return Profile(
        row["id"], row["external_id"], row["email"], row["phone"], row["email_status"], row["phone_status"],
        msgspec.json.decode(row["fields"]), row["created_at"], row["updated_at"],
    )  # fmt: skip


def check_builtin(name: str, value: Any) -> Any:
    """The stored form of a built-in value; None passes (it clears the column)."""
    if value is None:
        return None
    if name in ("email_status", "phone_status"):
        return check_status(name, value)
    return _CHECKS[name](value)


def check_fields(values: dict[str, Any], specs: dict[str, FieldSpec]) -> tuple[dict[str, Any], list[str]]:
    """(values to set, names to remove: those given as null); unknown names are a 422."""
    to_set: dict[str, Any] = {}
    to_remove: list[str] = []
    for name, value in values.items():
        spec = specs.get(name)
        if spec is None:
            hint = " (a built-in field: set it outside `fields`)" if name in BUILTIN_FIELDS else ""
            raise InputError("unknown_field", f"field {name} is not a declared profile field{hint}")
        if value is None:
            to_remove.append(name)
        else:
            to_set[name] = check_value(spec, value)
    return to_set, to_remove


async def create_profile(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    body = await read_json(request, ctx, ProfileIn)
    values = {name: check_builtin(name, getattr(body, name)) for name in (*LOOKUP_KEYS, "email_status", "phone_status")}
    fields, _ = check_fields(body.fields, await load_fields(conn))
    row = await conn.fetchrow(
        "insert into profiles (external_id, email, phone, email_status, phone_status, fields)"
        " values ($1, $2, $3, coalesce($4, 'active'), coalesce($5, 'active'), $6::jsonb) returning " + COLUMNS,
        values["external_id"], values["email"], values["phone"], values["email_status"], values["phone_status"],
        json.dumps(fields),
    )  # fmt: skip
    return json_response(profile_of(row), 201)


async def get_profile(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    profile_id = path_id(request, "profile_id")
    row = await conn.fetchrow(f"select {COLUMNS} from profiles where id = $1", profile_id)
    if row is None:
        raise NotFound("profile", profile_id)
    return json_response(profile_of(row))


async def lookup_profile(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    given = [(key, request.query_params[key]) for key in LOOKUP_KEYS if key in request.query_params]
    if len(given) != 1:
        raise InputError("invalid_lookup", "give exactly one of the query parameters email, phone, external_id", 400)
    key, raw = given[0]
    value = check_builtin(key, raw)
    row = await conn.fetchrow(f"select {COLUMNS} from profiles where {key} = $1", value)
    if row is None:
        raise NotFound(f"profile with {key}", repr(value))
    return json_response(profile_of(row))


async def update_profile(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    profile_id = path_id(request, "profile_id")
    body = await read_json(request, ctx, ProfilePatch)
    columns: dict[str, Any] = {}
    for name in (*LOOKUP_KEYS, "email_status", "phone_status"):
        value = getattr(body, name)
        if value is not msgspec.UNSET:
            columns[name] = check_builtin(name, value)
    fields, removed = (
        check_fields(body.fields, await load_fields(conn)) if body.fields is not msgspec.UNSET else ({}, [])
    )
    assignments = [f"{name} = ${i}" for i, name in enumerate(columns, start=4)]
    row = await conn.fetchrow(
        "update profiles set fields = (fields || $2::jsonb) - $3::text[], updated_at = now()"
        + "".join(", " + a for a in assignments) + f" where id = $1 returning {COLUMNS}",
        profile_id, json.dumps(fields), removed, *columns.values(),
    )  # fmt: skip
    if row is None:
        raise NotFound("profile", profile_id)
    return json_response(profile_of(row))


async def delete_profile(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    profile_id = path_id(request, "profile_id")
    if await conn.execute("delete from profiles where id = $1", profile_id) != "DELETE 1":
        raise NotFound("profile", profile_id)
    return Response(status_code=204)


_BUILTIN_DECLARATIONS = [
    ProfileField("external_id", "string", True),
    ProfileField("email", "string", True),
    ProfileField("phone", "string", True),
    ProfileField("email_status", "enum", True, ["active", "hard_bounced", "complained"]),
    ProfileField("phone_status", "enum", True, ["active", "undelivered", "complained"]),
]


async def list_fields(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    custom = [ProfileField(s.name, s.type, False, s.enum_values) for s in (await load_fields(conn)).values()]
    return json_response(ProfileFieldList([*_BUILTIN_DECLARATIONS, *custom]))


async def create_field(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    body = await read_json(request, ctx, ProfileFieldIn)
    check_declaration(body.name, body.type, body.enum_values)
    await conn.execute(
        "insert into profile_fields (name, type, enum_values) values ($1, $2, $3)",
        body.name,
        body.type,
        body.enum_values,
    )
    return json_response(ProfileField(body.name, body.type, False, body.enum_values), 201)

"""Bulk profile import: JSON lines or CSV streamed from the request body, applied in chunks.

The body is never held whole: bytes are cut into records as they arrive, and
every `TRACKER_API_IMPORT_CHUNK_ROWS` records are applied in one transaction.
A row is an upsert keyed by external_id, else email, else phone. A row that
is wrong (bad JSON, unknown field, bad value, an email that belongs to another
profile) is reported with its number and skipped; the others are applied.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from edge.api._errors import plain_validation_message
from edge.api._http import ApiContext, json_response, limited_stream
from edge.api.profiles import LOOKUP_KEYS, check_builtin, check_fields
from edge.api.schemas import ErrorDetail, ImportStopped, ImportSummary, ProfileIn, RowError
from tracker.domain.errors import InputError
from tracker.domain.profile_fields import BUILTIN_FIELDS, FieldSpec, load_fields, parse_text

ERRORS_LIMIT = 1000
MAX_LINE_BYTES = 1 << 20
_BUILTIN_COLUMNS = (*LOOKUP_KEYS, "email_status", "phone_status")
_decode_row = msgspec.json.Decoder(ProfileIn).decode

# One statement per row: find the profile by its key, refuse an email/phone that another
# profile holds, then update or insert. Conflicts come back as a value, not an exception,
# so one bad row does not abort the chunk's transaction.
_UPSERT = """
with target as (
    select id from profiles where {key} for update
), clash as (
    select case
        when $2::text is not null and exists (
            select from profiles p where p.email = $2 and p.id not in (select id from target)) then 'email'
        when $3::text is not null and exists (
            select from profiles p where p.phone = $3 and p.id not in (select id from target)) then 'phone'
    end as field
), updated as (
    update profiles p set
        email = coalesce($2, p.email), phone = coalesce($3, p.phone),
        email_status = coalesce($4, p.email_status), phone_status = coalesce($5, p.phone_status),
        fields = (p.fields || $6::jsonb) - $7::text[], updated_at = now()
    from target t
    where p.id = t.id and (select field from clash) is null
    returning p.id
), inserted as (
    insert into profiles (external_id, email, phone, email_status, phone_status, fields)
    select $1, $2, $3, coalesce($4, 'active'), coalesce($5, 'active'), $6::jsonb - $7::text[]
    where not exists (select from target) and (select field from clash) is null
    returning id
)
select (select field from clash) as clash, exists (select from inserted) as created
"""
# One statement per kind of key, so each finds its profile through that column's unique index.
_UPSERTS = {
    key: _UPSERT.format(key=f"{key} = ${n}::text") for n, key in enumerate(("external_id", "email", "phone"), start=1)
}


def _statement(args: tuple[Any, ...]) -> str:
    return _UPSERTS["external_id" if args[0] is not None else "email" if args[1] is not None else "phone"]


@dataclass
class _Row:
    number: int
    args: tuple[Any, ...]


class _Summary:
    def __init__(self) -> None:
        self.rows = self.created = self.updated = self.failed = 0
        self.errors: list[RowError] = []

    def fail(self, row: int, code: str, message: str) -> None:
        self.failed += 1
        if len(self.errors) < ERRORS_LIMIT:
            self.errors.append(RowError(row, code, message))

    def result(self) -> ImportSummary:
        applied = self.created + self.updated
        return ImportSummary(self.rows, applied, self.created, self.updated, self.failed, self.errors,
                             self.failed > len(self.errors))  # fmt: skip


async def import_profiles(request: Request, conn: asyncpg.Connection, ctx: ApiContext) -> Response:
    kind = _format(request)
    specs = await load_fields(conn)
    summary = _Summary()
    chunk: list[_Row] = []
    size = ctx.settings.edge.api_import_chunk_rows
    body = limited_stream(request, ctx.settings.edge.api_import_max_bytes)
    records = _jsonl_rows(body, specs) if kind == "jsonl" else _csv_rows(body, specs)
    try:
        async for number, parsed in records:
            summary.rows += 1
            if isinstance(parsed, InputError):
                summary.fail(number, parsed.code, parsed.message)
                continue
            chunk.append(_Row(number, parsed))
            if len(chunk) >= size:
                await _apply(conn, chunk, summary)
                chunk = []
    except InputError as exc:
        if not summary.rows:
            raise
        # The body broke off (too large, an unclosed quote): the rows read whole are applied
        # as promised, and the answer says what happened to each of them.
        if chunk:
            await _apply(conn, chunk, summary)
        return json_response(ImportStopped(ErrorDetail(exc.code, exc.message), summary.result()), exc.status)
    if chunk:
        await _apply(conn, chunk, summary)
    return json_response(summary.result())


def _format(request: Request) -> str:
    given = request.query_params.get("format")
    if given is not None:  # the schema's two names; the Content-Type may be any of the media types below
        if given in ("csv", "jsonl"):
            return given
        raise InputError("unsupported_format", "format must be csv or jsonl", 415)
    wanted = request.headers.get("content-type", "").split(";")[0].strip()
    if wanted in ("csv", "text/csv"):
        return "csv"
    if wanted in ("jsonl", "ndjson", "application/x-ndjson", "application/jsonl", "application/x-jsonlines"):
        return "jsonl"
    raise InputError("unsupported_format", "send text/csv or application/x-ndjson (or ?format=csv|jsonl)", 415)


async def _apply(conn: asyncpg.Connection, chunk: list[_Row], summary: _Summary) -> None:
    try:
        async with conn.transaction():
            outcomes = [await conn.fetchrow(_statement(row.args), *row.args) for row in chunk]
    except asyncpg.UniqueViolationError:
        # A concurrent writer took a key between our check and our write: redo the chunk
        # row by row, each in a savepoint, so only the rows that really conflict fail.
        outcomes = []
        async with conn.transaction():
            for row in chunk:
                try:
                    async with conn.transaction():
                        outcomes.append(await conn.fetchrow(_statement(row.args), *row.args))
                except asyncpg.UniqueViolationError as exc:
                    outcomes.append({"clash": exc.constraint_name or "key", "created": False})
    for row, outcome in zip(chunk, outcomes, strict=True):
        if outcome["clash"]:
            field = outcome["clash"].removeprefix("profiles_").removesuffix("_key")
            summary.fail(row.number, f"duplicate_{field}", f"another profile has this {field.replace('_', ' ')}")
        elif outcome["created"]:
            summary.created += 1
        else:
            summary.updated += 1


def _row_args(builtins: dict[str, Any], fields: dict[str, Any], specs: dict[str, FieldSpec]) -> tuple[Any, ...]:
    values = {name: check_builtin(name, builtins.get(name)) for name in _BUILTIN_COLUMNS}
    if not any(values[key] for key in LOOKUP_KEYS):
        raise InputError("no_key", "a row needs an external_id, email or phone")
    to_set, to_remove = check_fields(fields, specs)
    return (values["external_id"], values["email"], values["phone"], values["email_status"], values["phone_status"],
            json.dumps(to_set), to_remove)  # fmt: skip


async def _lines(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    rest = b""
    async for chunk in body:
        rest += chunk
        *complete, rest = rest.split(b"\n")
        for line in complete:
            yield line
        if len(rest) > MAX_LINE_BYTES:
            raise InputError("line_too_long", f"a line is longer than {MAX_LINE_BYTES} bytes", 400)
    if rest:
        yield rest


async def _jsonl_rows(body: AsyncIterator[bytes], specs: dict[str, FieldSpec]) -> AsyncIterator[tuple[int, Any]]:
    number = 0
    async for line in _lines(body):
        if not line.strip():
            continue
        number += 1
        try:
            row = _decode_row(line)
            builtins = {name: getattr(row, name) for name in _BUILTIN_COLUMNS}
            yield number, _row_args(builtins, row.fields, specs)
        except msgspec.ValidationError as exc:
            yield number, InputError("invalid_row", f"line {number}: {plain_validation_message(ProfileIn, str(exc))}")
        except msgspec.DecodeError as exc:
            yield number, InputError("malformed_json", f"line {number}: {exc}")
        except InputError as exc:
            yield number, exc


async def _csv_rows(body: AsyncIterator[bytes], specs: dict[str, FieldSpec]) -> AsyncIterator[tuple[int, Any]]:
    header: list[str] | None = None
    number = 0
    async for record, line in _csv_records(body):
        if header is None:
            header = _check_header(record, specs, line)
            continue
        if not any(cell.strip() for cell in record):
            continue
        number += 1
        if len(record) != len(header):
            yield (
                number,
                InputError("malformed_csv", f"line {line}: {len(record)} columns where the header has {len(header)}"),
            )
            continue
        builtins: dict[str, Any] = {}
        fields: dict[str, Any] = {}
        try:
            # An empty cell leaves the value as it is: CSV has no way to say null.
            for name, cell in zip(header, record, strict=True):
                if cell == "":
                    continue
                if name in _BUILTIN_COLUMNS:
                    builtins[name] = cell
                else:
                    fields[name] = parse_text(specs[name], cell)
            yield number, _row_args(builtins, fields, specs)
        except InputError as exc:
            yield number, exc
    if header is None:
        raise InputError("malformed_csv", "line 1: the CSV has no header row", 400)


def _check_header(record: list[str], specs: dict[str, FieldSpec], line: int) -> list[str]:
    header = [name.strip().lstrip("\ufeff") for name in record]
    for column, name in enumerate(header, start=1):
        if name not in _BUILTIN_COLUMNS and name not in specs:
            hint = " (built in and not importable)" if name in BUILTIN_FIELDS else ""
            raise InputError("unknown_field", f"line {line}, column {column}: {name!r} is not a profile field{hint}")
    if len(set(header)) != len(header):
        raise InputError("malformed_csv", f"line {line}: the header names a column twice", 400)
    if not set(header) & set(LOOKUP_KEYS):
        raise InputError("malformed_csv", f"line {line}: the header needs external_id, email or phone", 400)
    return header


async def _csv_records(body: AsyncIterator[bytes]) -> AsyncIterator[tuple[list[str], int]]:
    """(cells, line number) per record; a quoted cell may span lines, so lines are joined
    until the quotes balance (an escaped quote is two quotes, which keeps the balance)."""
    pending: list[str] = []
    quotes = 0
    line = start = 0
    async for raw in _lines(body):
        line += 1
        try:
            text = raw.decode().removesuffix("\r")
        except UnicodeDecodeError as exc:
            raise InputError("malformed_csv", f"line {line}: not UTF-8 (byte {exc.start + 1})", 400) from None
        if not pending:
            start = line
        pending.append(text)
        quotes += text.count('"')
        if quotes % 2:
            continue
        try:
            record = next(csv.reader(["\n".join(pending)], strict=True), [])
        except csv.Error as exc:
            raise InputError("malformed_csv", f"line {start}: {exc}", 400) from None
        pending, quotes = [], 0
        yield [cell.removesuffix("\r") for cell in record], start
    if pending:
        raise InputError("malformed_csv", f"line {start}: a quoted cell is never closed", 400)

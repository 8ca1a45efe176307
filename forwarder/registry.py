"""The hooks worker's Postgres side: definitions, delivery outcomes, and the lookups filters need."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from tracker.domain.hook_definitions import Destination, HookFilter, decode_filter
from tracker.domain.hook_secrets import unseal_destination
from tracker.domain.secret_box import SecretBox, SecretKeyMissing

_MESSAGES_CACHE_MAX = 100_000


@dataclass(frozen=True, slots=True)
class HookDefinition:
    id: int
    name: str
    destination: Destination  # with its secrets
    filter: HookFilter
    state: str
    updated_at: dt.datetime

    @property
    def version(self) -> tuple[Any, ...]:
        """What, when it changes, needs a new destination or filter (a state change does not)."""
        return (self.destination, self.filter)


def _definition(row: asyncpg.Record, box: SecretBox) -> HookDefinition:
    return HookDefinition(
        row["id"], row["name"], unseal_destination(row["secrets"], box), decode_filter(row["filter"]), row["state"],
        row["updated_at"],
    )  # fmt: skip


_SELECT = "select id, name, secrets::text as secrets, filter::text as filter, state, updated_at from hooks"


async def load_hooks(
    conn: asyncpg.Connection | asyncpg.Pool, box: SecretBox
) -> tuple[dict[int, HookDefinition], dict[int, str]]:
    """The definitions, and why each hook whose secrets do not open (a key missing) was left out."""
    definitions, unreadable = {}, {}
    for row in await conn.fetch(_SELECT + " order by id"):
        try:
            definitions[row["id"]] = _definition(row, box)
        except SecretKeyMissing as exc:  # the other hooks go on; this one waits for its key
            unreadable[row["id"]] = str(exc)
    return definitions, unreadable


async def load_hook(conn: asyncpg.Connection | asyncpg.Pool, hook_id: int, box: SecretBox) -> HookDefinition | None:
    """One definition (None: no such hook); SecretKeyMissing when its secrets do not open."""
    row = await conn.fetchrow(_SELECT + " where id = $1", hook_id)
    return None if row is None else _definition(row, box)


async def record_success(pool: asyncpg.Pool, hook_id: int, events: int) -> None:
    await pool.execute(
        "update hooks set consecutive_failures = 0, last_success_at = now(), delivered = delivered + $2"
        " where id = $1",
        hook_id, events,
    )  # fmt: skip


async def record_failure(pool: asyncpg.Pool, hook_id: int, error: str, failures: int, pause: bool) -> str:
    """Note the failure; with `pause`, an active hook becomes failing. Returns the hook's state now."""
    state = await pool.fetchval(
        "update hooks set consecutive_failures = $3, last_error = $2, last_error_at = now(),"
        " state = case when $4 and state = 'active' then 'failing' else state end,"
        " updated_at = case when $4 and state = 'active' then now() else updated_at end"
        " where id = $1 returning state",
        hook_id, error[:2000], failures, pause,
    )  # fmt: skip
    return state or "deleted"


async def record_dead_letter(pool: asyncpg.Pool, hook_id: int, events: int) -> None:
    await pool.execute("update hooks set dead_lettered = dead_lettered + $2 where id = $1", hook_id, events)


class Lookups:
    """Set-based lookups for filters: one query per delivery batch, never one per event."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        # A message's resource hardly ever changes; cached for the worker's life (bounded).
        self._resource_of: dict[int, int | None] = {0: None}

    async def resources(self, message_ids: set[int]) -> dict[int, int | None]:
        unknown = [m for m in message_ids if m not in self._resource_of]
        if unknown:
            if len(self._resource_of) > _MESSAGES_CACHE_MAX:
                self._resource_of = {0: None}
            rows = await self.pool.fetch(
                "select id, resource_id from messages where id = any($1::bigint[])", unknown
            )
            found = {row["id"]: row["resource_id"] for row in rows}
            for message_id in unknown:
                self._resource_of[message_id] = found.get(message_id)
        return self._resource_of

    async def profiles_matching(self, profile_ids: set[int], fields: dict[str, Any]) -> set[int]:
        rows = await self.pool.fetch(
            "select id from profiles where id = any($1::bigint[]) and fields @> $2::jsonb",
            list(profile_ids), json.dumps(fields),
        )  # fmt: skip
        return {row["id"] for row in rows}

"""Versioned schema migrations: numbered SQL files applied in order, once each.

An advisory lock lets several processes call `migrate` at start-up safely.
"""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

log = logging.getLogger("tracker.contract.schema")
_LOCK_ID = 0x7472_6B6D  # "trkm"


def available() -> list[tuple[int, str, str]]:
    """(number, name, sql) of every migration shipped with the package, in order."""
    found = []
    for entry in resources.files("tracker.contract.migrations").iterdir():
        if entry.name.endswith(".sql"):
            number, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append((int(number), name, entry.read_text()))
    return sorted(found)


async def migrate(database_url: str) -> list[str]:
    """Apply what is missing; return the names of the migrations applied now."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("select pg_advisory_lock($1)", _LOCK_ID)
        try:
            await conn.execute(
                "create table if not exists schema_migrations ("
                " version integer primary key, name text not null,"
                " applied_at timestamptz not null default now())"
            )
            done = {row[0] for row in await conn.fetch("select version from schema_migrations")}
            applied = []
            for number, name, sql in available():
                if number in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "insert into schema_migrations (version, name) values ($1, $2)", number, name
                    )
                log.info("applied migration %04d_%s", number, name)
                applied.append(f"{number:04d}_{name}")
            return applied
        finally:
            await conn.execute("select pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        await conn.close()

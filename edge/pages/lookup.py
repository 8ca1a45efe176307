"""What the pages show about a recipient, read from Postgres, and the preference toggles they write.

A page must work whatever Postgres does: a failed or slow read gives None and
the page goes on without the list name and the address. A toggle that cannot
be written says so (the caller answers 503) rather than claim it was saved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("edge.pages")

# A page waits this long for Postgres at most, acquiring included, before it renders without details.
_TIMEOUT_S = 2.0

_DETAILS = """
select r.id as resource_id, r.name as list_name, p.email, p.phone
from (select 1) one
left join messages m on m.id = $1
left join resources r on r.id = m.resource_id
left join profiles p on p.id = $2
"""

_SUBSCRIPTIONS = """
select r.id, r.name, r.channel, s.status
from subscriptions s join resources r on r.id = s.resource_id
where s.profile_id = $1
order by lower(r.name), r.id
"""

# A toggle changes only a subscription the profile already has: a link in a message proves who
# holds the address, not consent to lists it was never on, and a pending double opt-in stays
# pending until its own confirm link is used. Times as the flusher keeps them.
_UNSUBSCRIBE = """
update subscriptions set status = 'unsubscribed', unsubscribed_at = now(), updated_at = now()
where profile_id = $1 and resource_id = $2 and status <> 'unsubscribed'
"""
_RESUBSCRIBE = """
update subscriptions set status = 'subscribed', subscribed_at = now(), updated_at = now()
where profile_id = $1 and resource_id = $2 and status = 'unsubscribed'
"""


@dataclass(frozen=True, slots=True)
class RecipientDetails:
    resource_id: int | None
    list_name: str
    email: str | None
    phone: str | None


@dataclass(frozen=True, slots=True)
class ListSubscription:
    resource_id: int
    name: str
    channel: str
    status: str  # pending | subscribed | unsubscribed


class RecipientLookup:
    """Reads through the edge's Postgres pool (`pool_source.pg_pool`, set by the edge's lifespan)."""

    def __init__(self, pool_source: Any, counters: Any) -> None:
        self.pool_source = pool_source
        self.counters = counters

    async def details(self, message_id: int, profile_id: int) -> RecipientDetails | None:
        row = await self._read("fetchrow", _DETAILS, message_id, profile_id)
        if row is None:
            return None
        return RecipientDetails(row["resource_id"], row["list_name"] or "", row["email"], row["phone"])

    async def subscriptions(self, profile_id: int) -> list[ListSubscription] | None:
        rows = await self._read("fetch", _SUBSCRIPTIONS, profile_id)
        if rows is None:
            return None
        return [ListSubscription(r["id"], r["name"], r["channel"], r["status"]) for r in rows]

    async def set_subscribed(self, profile_id: int, resource_id: int, subscribed: bool) -> bool:
        """Whether the change was written (or there was nothing to change); False when Postgres failed."""
        done = await self._read("execute", _RESUBSCRIBE if subscribed else _UNSUBSCRIBE, profile_id, resource_id)
        return done is not None

    async def _read(self, method: str, query: str, *args: Any) -> Any:
        pool = self.pool_source.pg_pool
        if pool is None:
            return None
        try:
            async with pool.acquire(timeout=_TIMEOUT_S) as conn:
                return await getattr(conn, method)(query, *args, timeout=_TIMEOUT_S)
        except Exception as exc:  # any failure: the page renders without what it could not read
            self.counters.lookup_errors += 1
            log.warning("recipient page lookup failed: %s", type(exc).__name__)
            return None

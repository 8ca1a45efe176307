"""Judging a batch before it is stored: each open and click gets its verdict and reasons.

One round trip gathers the history the rules need (render/send/delivery times of the batch's
message-profile pairs, honeypot links, recent clicks from the same sources); the rules are
tracker.domain.verdicts. Earlier clicks that a new burst or honeypot fetch turns into a
machine's come back as changes, applied in the batch's own transaction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import asyncpg

from tracker.config import Settings
from tracker.contract.events import Event
from tracker.domain import verdict_store as store
from tracker.domain.machine_networks import MachineNetworks
from tracker.domain.verdicts import (
    CLICKS,
    JUDGED,
    MACHINE,
    Click,
    bursts,
    decide,
    honeypot_marked,
    reference_time,
    too_fast,
)
from tracker.domain.verdicts import rules_of as verdict_rules

_HONEYPOT_CACHE_MAX = 100_000
_DECISIONS_MAX = 10_000  # kinds x user-agent classes x signals x labels: bounded against odd input


@dataclass(slots=True)
class _Decision:
    """One combination's verdict and reasons, and how many events of the batch being judged got it."""

    verdict: str
    reasons: tuple[str, ...]
    events: int = 0


class Judge:
    def __init__(self, settings: Settings) -> None:
        self.rules = verdict_rules(settings.flusher)
        self.networks = MachineNetworks(settings.flusher.machine_networks_file)
        # Link tables are immutable per version: which links are honeypots never changes.
        self._traps: dict[tuple[int, int], frozenset[int]] = {}
        self.counts: Counter[tuple[str, str]] = Counter()  # (verdict, reason) -> events, for /metrics
        self._decisions: dict[tuple, _Decision] = {}  # a few hundred combinations at most

    async def judge(self, conn: asyncpg.Connection, events: list[Event]) -> list[store.Change]:
        """Set each open's and click's verdict and reasons on the event itself; return the changes
        to earlier clicks."""
        judged = [e for e in events if e.kind in JUDGED]
        if not judged:
            return []
        rules = self.rules
        times = await store.reference_times(conn, {(e.message_id, e.profile_id) for e in judged})
        clicks = [e for e in judged if e.kind in CLICKS]
        own = {e.id: Click(e.id, e.ts_us, e.message_id, e.ip_prefix, (e.link_version, e.link_index)) for e in clicks}
        stored: list[store.StoredClick] = []
        if clicks:
            span = rules.history_us
            sources = {(c.message_id, c.ip_prefix) for c in own.values() if c.ip_prefix}
            stored = [s for s in await store.recent_clicks(conn, sources, min(e.ts_us for e in clicks) - span,
                                                           max(e.ts_us for e in clicks) + span)
                      if s.click.id not in own]  # fmt: skip
        every = [*own.values(), *(s.click for s in stored)]
        traps = await self._trap_links(conn, {(c.message_id, c.link[0]) for c in every})
        burst = bursts(every, rules)
        trapped = honeypot_marked(every, traps, rules) | {c.id for c in every if (c.message_id, *c.link) in traps}
        label_of = self.networks.current().label_of
        decisions = self._decisions
        if len(decisions) > _DECISIONS_MAX:
            decisions.clear()
        used: list[_Decision] = []
        for event in events:
            kind = event.kind
            if kind not in JUDGED:
                continue  # stored as "unknown", no reasons: no person's action to judge
            pair_times = times.get((event.message_id, event.profile_id))
            sent_at = reference_time(pair_times, event.ts_us) if pair_times else None
            # verdicts.judge, read down to the values it depends on (the same rules: `decide`).
            key = (kind, event.ua_class, event.signals, too_fast(event.ts_us, sent_at, rules),
                   label_of(event.ip_prefix), event.id in burst, event.id in trapped)  # fmt: skip
            decision = decisions.get(key)
            if decision is None:
                decision = decisions[key] = _Decision(*decide(kind, key[1], key[2], fast=key[3], network=key[4],
                                                              burst=key[5], honeypot=key[6]))  # fmt: skip
            if not decision.events:
                used.append(decision)
            decision.events += 1
            # In place (the batch's own decoded events): a copy of each cost more than the rest of this loop.
            event.verdict, event.reasons = decision.verdict, decision.reasons
        counts = self.counts
        for decision in used:
            for reason in decision.reasons:
                counts[decision.verdict, reason] += decision.events
            decision.events = 0
        return _turned(stored, burst, trapped)

    async def _trap_links(self, conn: asyncpg.Connection, versions: set[tuple[int, int]]) -> set[tuple[int, int, int]]:
        missing = {v for v in versions if v not in self._traps}
        if missing:
            found = await store.honeypot_links(conn, missing)
            if len(self._traps) > _HONEYPOT_CACHE_MAX:
                self._traps.clear()
            for version in missing:
                self._traps[version] = frozenset(i for m, v, i in found if (m, v) == version)
        return {(m, v, i) for m, v in versions for i in self._traps.get((m, v), ())}


def _turned(stored: list[store.StoredClick], burst: set[bytes], trapped: set[bytes]) -> list[store.Change]:
    """Stored clicks that the new ones show to be a machine's: their reasons gain burst or honeypot."""
    changes = []
    for earlier in stored:
        added = [r for r, hit in (("honeypot", earlier.click.id in trapped), ("burst", earlier.click.id in burst))
                 if hit and r not in earlier.reasons]  # fmt: skip
        if not added:
            continue
        kept = earlier.reasons if earlier.verdict == MACHINE else ()
        changes.append(store.Change(earlier.click.id, earlier.ts, MACHINE, tuple(sorted({*kept, *added}))))
    return changes

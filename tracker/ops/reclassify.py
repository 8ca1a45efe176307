"""`tracker reclassify`: judge stored opens and clicks again with today's rules and lists.

Events keep the signals they were judged from (user-agent class, header bits, IP prefix, time),
so a better rule or a changed machine-network list can re-judge the past. Every derived
counter moves with the verdict, by deltas, in the same transaction (tracker.domain.verdict_store);
an event already judged as the rules say is left alone, so running it twice changes nothing.
Profile effects already applied are not undone: a click's effects wait out the settle window
for that reason.

One ordered scan over the time range (and message), grouped by message as it streams.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tracker.config import Settings
from tracker.contract.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from tracker.domain import verdict_store as store
from tracker.domain.machine_networks import MachineNetworks, NetworkListError
from tracker.domain.verdicts import CLICKS, JUDGED, Click, bursts, honeypot_marked, judge, reference_time, rules_of

_CHUNK = 5000


def add_reclassify_command(sub: Any) -> None:
    cmd = sub.add_parser(
        "reclassify",
        help="judge stored opens and clicks again (human or machine) and update every counter exactly",
        description="Re-run the verdict rules (TRACKER_VERDICT_*, TRACKER_MACHINE_NETWORKS_FILE) over the opens and "
        "clicks stored since --since, and update their verdicts, reasons and the counters derived from them "
        "(per message, per profile, per reason). Safe to repeat: a second run changes nothing. Profile effects "
        "already applied are not undone. Progress goes to stderr, one line per message.",
    )
    cmd.add_argument("--since", required=True, type=_moment, help="ISO date or date-time (UTC unless it says)")
    cmd.add_argument("--until", type=_moment, help="ISO date or date-time, exclusive [default: now]")
    cmd.add_argument("--message", type=int, metavar="ID", help="only this message")
    cmd.add_argument("--dry-run", action="store_true", help="count what would change, change nothing")
    cmd.set_defaults(handler=cmd_reclassify)


def _moment(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or date-time (e.g. 2026-11-01)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@dataclass
class Summary:
    messages: int = 0
    judged: int = 0
    changed: int = 0
    moves: Counter[tuple[str, str]] = field(default_factory=Counter)  # (from, to) -> events

    def line(self) -> str:
        moves = ", ".join(f"{a} -> {b}: {n}" for (a, b), n in sorted(self.moves.items())) or "none"
        return f"{self.judged} events of {self.messages} messages judged; {self.changed} changed ({moves})"


_SCAN = """
select id, ts, kind, message_id, profile_id, ua_class, signals, ip_prefix, link_version, link_index, verdict, reasons
from events
where ts >= $1 and ts < $2 and kind = any($3::text[]) and ($4::bigint is null or message_id = $4)
order by message_id, ts, id
"""


async def reclassify(
    conn: Any, scan: Any, settings: Settings, since: dt.datetime, until: dt.datetime,
    message_id: int | None = None, *, dry_run: bool = False, progress: Any = None,
) -> Summary:
    """Judge again and apply the changes (on `conn`) while `scan`, a second connection, streams the
    events; `progress(text)` is called once per message."""
    rules = rules_of(settings.flusher)
    networks = MachineNetworks(settings.flusher.machine_networks_file).list
    summary = Summary()

    async def finish(rows: list[Any]) -> None:
        changes = await _judge_message(conn, rows, rules, networks)
        summary.messages += 1
        summary.judged += len(rows)
        changed = 0
        if changes and not dry_run:
            for start in range(0, len(changes), _CHUNK):
                async with conn.transaction():
                    changed += await store.change_verdicts(conn, changes[start : start + _CHUNK])
        else:
            changed = len(changes)
        summary.changed += changed
        old = {r["id"].bytes: r["verdict"] for r in rows}
        for change in changes:
            summary.moves[old[change.id], change.verdict] += 1
        if progress is not None:
            progress(f"message {rows[0]['message_id']}: {len(rows)} judged, {changed} changed")

    rows: list[Any] = []
    async with scan.transaction(isolation="repeatable_read", readonly=True):
        async for row in scan.cursor(_SCAN, since, until, sorted(JUDGED), message_id, prefetch=2000):
            if rows and row["message_id"] != rows[0]["message_id"]:
                await finish(rows)
                rows = []
            rows.append(row)
    if rows:
        await finish(rows)
    return summary


async def _judge_message(conn: Any, rows: list[Any], rules: Any, networks: Any) -> list[store.Change]:
    times = await store.reference_times(conn, {(r["message_id"], r["profile_id"]) for r in rows})
    clicks = [Click(r["id"].bytes, store.micros(r["ts"]), r["message_id"], r["ip_prefix"],
                    (r["link_version"], r["link_index"])) for r in rows if r["kind"] in CLICKS]  # fmt: skip
    traps = await store.honeypot_links(conn, {(c.message_id, c.link[0]) for c in clicks})
    burst = bursts(clicks, rules)
    trapped = honeypot_marked(clicks, traps, rules) | {c.id for c in clicks if (c.message_id, *c.link) in traps}
    changes = []
    for r in rows:
        ts_us = store.micros(r["ts"])
        verdict, reasons = judge(
            r["kind"], ts_us, r["ua_class"], r["signals"],
            sent_at_us=reference_time(times.get((r["message_id"], r["profile_id"]), ()), ts_us),
            network=networks.label_of(r["ip_prefix"]), burst=r["id"].bytes in burst,
            honeypot=r["id"].bytes in trapped, rules=rules,
        )  # fmt: skip
        if verdict != r["verdict"] or list(reasons) != list(r["reasons"]):
            changes.append(store.Change(r["id"].bytes, r["ts"], verdict, reasons))
    return changes


def cmd_reclassify(args: argparse.Namespace) -> int:
    import asyncpg

    settings = Settings.from_env()
    settings.require("database_url")
    until = args.until or dt.datetime.now(dt.UTC)
    if until <= args.since:
        print("tracker reclassify: --until must be after --since", file=sys.stderr)
        return EXIT_USAGE

    async def main() -> Summary:
        conn = await asyncpg.connect(settings.database_url)
        scan = await asyncpg.connect(settings.database_url)
        try:
            return await reclassify(conn, scan, settings, args.since, until, args.message, dry_run=args.dry_run,
                                    progress=lambda text: print(text, file=sys.stderr, flush=True))  # fmt: skip
        finally:
            await scan.close()
            await conn.close()

    try:
        summary = asyncio.run(main())
    except NetworkListError as exc:
        print(f"tracker reclassify: machine networks: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"tracker reclassify: database error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(("would change: " if args.dry_run else "") + summary.line())
    return EXIT_OK

"""`python -m bench.locust_seed`: messages and recipients for `bench/locustfile.py`, rendered as a sender would.

    .venv/bin/python -m bench.locust_seed --fresh            # create trk_locust_<random> on DATABASE_URL's server
    .venv/bin/python -m bench.locust_seed                    # use DATABASE_URL as it is (migrated if needed)
    .venv/bin/python -m bench.locust_seed --drop             # drop the database a --fresh seed created
    .venv/bin/python -m bench.locust_seed --tracker-run var  # for `tracker run`: its database (DATABASE_URL) and keys

Runs the migrations, creates `--profiles` profiles, registers an email (with
`--links` tracked links), an SMS (two URLs, so two short links each) and an
app-push message, and renders them for every profile with `tracker.domain.render`,
the code the API uses: the tokens and short codes are the ones real
recipients would get. Writes the paths to `--out` (JSON, read by the
locustfile through LOCUST_SEED_FILE) and the environment the edge needs
(database, signing keys, generic webhook secret) to `<out>.env`, mode 0600.

DATABASE_URL, REDIS_URL and TRACKER_SIGNING_KEYS are taken from the environment when
set, else from the stack file of the `tracker run --data-dir DIR` named by
`--tracker-run DIR` (its signing-keys file alone when that run has stopped), else
the keys are made up here. REDIS_URL, when known, gets the SMS short codes cached as
the API would (the edge falls back to Postgres anyway). Runs from any folder; the
seed file goes to bench/results/ of this checkout unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
from redis.asyncio import Redis

from bench._services import create_database, drop_database
from tracker.config import Settings, parse_signing_keys
from tracker.contract.schema import migrate
from tracker.domain.messages import register_message
from tracker.domain.render import render_message
from tracker.ops.stack_file import FILE_NAME, read_stack, stale_reason

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "locust-seed.json"
PUSH_ACTIONS = ["view", "reply", "dismiss"]
_PATH = re.compile(r"https?://[^/\s\"]+(/(?:o|r|c|s)/[A-Za-z0-9_\-]+(?:\.gif)?)")


def email_html(links: int) -> str:
    items = "".join(f'<li><a href="https://example.com/offer/{n}?utm_source=locust">Offer {n}</a></li>'
                    for n in range(links))  # fmt: skip
    return f"<html><body><h1>This week</h1><ul>{items}</ul><p>Thanks for reading.</p></body></html>"


SMS_TEXT = "Flash sale today: https://example.com/sale?utm_source=sms - stop: https://example.com/stop"
PUSH_TEXT = "Your order has shipped"


async def seed(settings: Settings, profiles: int, links: int) -> dict:
    await migrate(settings.database_url)
    conn = await asyncpg.connect(settings.database_url)
    redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
    try:
        tag = secrets.token_hex(4)
        # Phone numbers follow the last seed's, so a database can be seeded again (e.g. the one `tracker run` uses).
        profile_ids = list(await conn.fetchval(
            "with last as (select coalesce(max(substr(phone, 6)::bigint), 0) as top from profiles"
            "  where phone ~ '^\\+1555[0-9]{7}$'),"
            " made as (insert into profiles (email, phone)"
            "  select 'locust-' || $1 || '-' || n || '@example.com', '+1555' || lpad((last.top + n)::text, 7, '0')"
            "  from last, generate_series(1, $2) as n returning id)"
            " select array_agg(id order by id) from made",
            tag, profiles,
        ))  # fmt: skip
        email = await register_message(conn, "email", f"locust email {tag}", email_html(links))
        sms = await register_message(conn, "sms", f"locust sms {tag}", SMS_TEXT)
        push = await register_message(conn, "app_push", f"locust push {tag}", PUSH_TEXT)
        _info, emails = await render_message(conn, settings, email.message_id, profile_ids)
        _info, texts = await render_message(conn, settings, sms.message_id, profile_ids, redis=redis)
        _info, pushes = await render_message(conn, settings, push.message_id, profile_ids)
    finally:
        await conn.close()
        if redis is not None:
            await redis.aclose()
    recipients = []
    for mail in emails:
        paths = _PATH.findall(mail.body or "")
        recipients.append({
            "profile_id": mail.profile_id,
            "open": next(p for p in paths if p.startswith("/o/")),
            "read": next(p for p in paths if p.startswith("/r/")),
            "clicks": [p for p in paths if p.startswith("/c/")],
            "ref": (mail.headers or {})["X-Tracker-Ref"],
        })  # fmt: skip
    return {
        "messages": {"email": email.message_id, "sms": sms.message_id, "push": push.message_id},
        "email": recipients,
        "sms": [{"profile_id": text.profile_id, "links": _PATH.findall(text.body or "")} for text in texts],
        "push": [{"profile_id": p.profile_id, "base": _push_base(p.push_urls)} for p in pushes],
        "push_actions": PUSH_ACTIONS,
    }


def _push_base(urls: dict[str, str] | None) -> str:
    """`/p/{token}` from the rendered ack/open/click URLs."""
    return urlsplit((urls or {})["ack"]).path.removesuffix("/ack")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.locust_seed",
        description=__doc__.split("\n\n")[2].replace("\n", " "),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""),
                        help="the database to seed (with --fresh: a server URL to create one on)")  # fmt: skip
    parser.add_argument("--fresh", action="store_true", help="create a new database trk_locust_<random> and seed it")
    parser.add_argument("--drop", action="store_true", help="drop the database a --fresh seed in --out created")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("LOCUST_SEED_FILE", DEFAULT_OUT)),
                        help="seed file the locustfile reads (LOCUST_SEED_FILE)")  # fmt: skip
    parser.add_argument("--tracker-run", type=Path, metavar="DATA_DIR",
                        help="seed the stack `tracker run --data-dir DATA_DIR` runs: its database, Redis and"
                             " signing keys, from its stack file (without --fresh)")  # fmt: skip
    parser.add_argument("--profiles", type=int, default=500, help="recipients of every message")
    parser.add_argument("--links", type=int, default=5, help="tracked links in the email")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.drop:
        return drop(args.out)
    env = {**stack_of(args.tracker_run), **{name: value for name, value in os.environ.items() if value}}
    database_url = args.database_url or env.get("DATABASE_URL", "")
    if not database_url:
        print("locust_seed: DATABASE_URL (or --database-url, or --tracker-run DIR of a running `tracker run`) is not "
              "set", file=sys.stderr)  # fmt: skip
        return 2
    keys = env.get("TRACKER_SIGNING_KEYS") or run_keys(args.tracker_run) or f"1:{secrets.token_urlsafe(24)}"
    report_secret = env.get("TRACKER_REPORT_GENERIC_EMAIL_SECRET") or secrets.token_urlsafe(24)
    admin_url, database = database_url, None
    if args.fresh:
        database, database_url = create_database(admin_url)
    settings = Settings.from_env(
        {k: v for k, v in env.items() if k not in ("TRACKER_SIGNING_KEYS", "DATABASE_URL")},
        database_url=database_url,
        signing_keys=parse_signing_keys(keys),
    )
    data = asyncio.run(seed(settings, args.profiles, args.links))
    data |= {"database": database, "admin_url": admin_url if database else None,
             "report_generic_email_secret": report_secret}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _write_private(args.out, json.dumps(data))
    env_file = args.out.with_suffix(".env")
    _write_private(env_file, "".join(f"{name}={value}\n" for name, value in {
        "DATABASE_URL": database_url,
        "TRACKER_SIGNING_KEYS": keys,
        "TRACKER_REPORT_GENERIC_EMAIL_SECRET": report_secret,
        "LOCUST_SEED_FILE": str(args.out),
    }.items()))  # fmt: skip
    print(f"seeded {args.profiles} recipients x (email with {args.links} links, SMS with 2 short links, app push)"
          f" in {database or 'DATABASE_URL'}: messages {data['messages']}")  # fmt: skip
    print(f"seed file: {args.out}; the edge's environment: {env_file} (set -a; . {env_file}; set +a)")
    return 0


def stack_of(data_dir: Path | None) -> dict[str, str]:
    """DATABASE_URL, REDIS_URL and the signing keys of the running `tracker run --data-dir data_dir`, if any."""
    if data_dir is None:
        return {}
    stack = read_stack(data_dir / FILE_NAME)
    if stack is None:
        return {}
    stale = stale_reason(stack)
    if stale:
        print(f"locust_seed: ignoring {stack.path}: {stale}", file=sys.stderr)
        return {}
    print(f"locust_seed: using the stack of `tracker run` in {data_dir}", file=sys.stderr)
    return {name: stack.variables[name] for name in ("DATABASE_URL", "REDIS_URL", "TRACKER_SIGNING_KEYS")
            if stack.variables.get(name)}  # fmt: skip


def run_keys(data_dir: Path | None) -> str | None:
    """The signing keys `tracker run --data-dir data_dir` made and keeps (it reads the file again at each start)."""
    if data_dir is None:
        return None
    path = data_dir / "signing-keys"
    if not path.exists():
        raise SystemExit(f"locust_seed: no {path}: start `tracker run --data-dir {data_dir}` once first")
    return path.read_text().strip()


def drop(out: Path) -> int:
    try:
        data = json.loads(out.read_text())
    except FileNotFoundError:
        print(f"locust_seed: no seed file {out}", file=sys.stderr)
        return 1
    if not data.get("database"):
        print("locust_seed: that seed used DATABASE_URL as it was; nothing to drop")
        return 0
    drop_database(data["admin_url"], data["database"])
    print(f"dropped {data['database']}")
    return 0


def _write_private(path: Path, text: str) -> None:
    # The files hold the signing keys and the webhook secret of this run.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())

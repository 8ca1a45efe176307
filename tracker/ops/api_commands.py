"""`tracker create-api-key`, `list-api-keys`, `revoke-api-key`, `register-message` and `render`: the API's jobs
from a shell."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tracker.config import Settings
from tracker.contract.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from tracker.contract.tokens import MESSAGE_CHANNELS
from tracker.domain.errors import InputError


def add_api_commands(sub: Any) -> None:
    key = sub.add_parser(
        "create-api-key",
        help="create an API key (shown once) for /api/v1",
        description="Create an API key and print it once; only its hash is stored. Send it as "
        "`Authorization: Bearer <key>`.",
    )
    key.add_argument("--name", required=True, help="who or what uses the key, e.g. 'sending platform'")
    key.add_argument("--scopes", default="read,write", help="comma-separated: read, write [default: %(default)s]")
    key.set_defaults(handler=cmd_create_api_key)

    keys = sub.add_parser(
        "list-api-keys",
        help="list API keys: id, name, scopes, created and revoked times (never the secret)",
        description="List the API keys. Secrets cannot be listed: only their hashes are stored.",
    )
    keys.add_argument("--all", action="store_true", help="include revoked keys")
    keys.add_argument("--json", action="store_true", help="one JSON document")
    keys.set_defaults(handler=cmd_list_api_keys)

    revoke = sub.add_parser(
        "revoke-api-key",
        help="revoke an API key, by its id or the whole key; refused from the next request on",
        description="Revoke an API key. KEY is the key's 12-digit id (as `list-api-keys` shows it) or the whole "
        "key. Exit 0 when it was revoked now, 1 when no live key has that id.",
    )
    revoke.add_argument("key", metavar="KEY", help="the key id (12 hex digits) or the whole trk_... key")
    revoke.set_defaults(handler=cmd_revoke_api_key)

    reg = sub.add_parser(
        "register-message",
        help="register a message's content from a file (its links become a link-table version)",
        description="Register a message from FILE ('-' for standard input). Email content is HTML: its http(s) links "
        "are tracked, with update-<field>= and subscribe-to= attributes checked. SMS content is text. With "
        "--message-id the content becomes a new version of that message. Prints the message as JSON.",
    )
    reg.add_argument("file", metavar="FILE", help="the content (HTML for email, text for SMS)")
    reg.add_argument("--channel", choices=MESSAGE_CHANNELS, default="email", help="[default: %(default)s]")
    reg.add_argument("--name", default="", help="a name for people")
    reg.add_argument("--resource-id", type=int, help="the list whose unsubscribe/confirm the message drives")
    reg.add_argument("--message-id", type=int, help="add a new version to this message instead")
    reg.add_argument("--honeypot", action="store_true",
                     help="email: add one invisible link that only machines follow (the verdict's honeypot rule)")
    reg.set_defaults(handler=cmd_register_message)

    ren = sub.add_parser(
        "render",
        help="print each recipient's tracked content as JSON lines",
        description="Render MESSAGE_ID for the given profiles: one JSON object per line with the profile id, the "
        "body (tracked links, pixels, unsubscribe URL) and, for email, the headers.",
    )
    ren.add_argument("message_id", metavar="MESSAGE_ID", type=int)
    ren.add_argument("--profiles", required=True, help="comma-separated profile ids, e.g. 1,2,3")
    ren.add_argument("--version", type=int, help="link-table version [default: the current one]")
    ren.set_defaults(handler=cmd_render)

    url = sub.add_parser(
        "report-url",
        help="print a short-lived signed URL of a message's report page (funnel or click map) for a browser",
        description="Print a signed URL of MESSAGE's report page under TRACKER_PUBLIC_URL. It works without an API "
        "key until it expires (TRACKER_ANALYTICS_LINK_TTL_S); its expiry goes to standard error.",
    )
    url.add_argument("message_id", metavar="MESSAGE", type=int, help="the message id")
    url.add_argument("--page", choices=("funnel", "clickmap"), default="funnel", help="[default: %(default)s]")
    url.add_argument("--version", type=int, help="click map: link-table version [default: the current one]")
    url.set_defaults(handler=cmd_report_url)


def _run(job: Callable[[Any, Settings], Awaitable[int]]) -> int:
    import asyncpg

    settings = Settings.from_env()
    settings.require("database_url")

    async def main() -> int:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await job(conn, settings)
        finally:
            await conn.close()

    try:
        return asyncio.run(main())
    except InputError as exc:
        print(f"tracker: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"tracker: database error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def cmd_create_api_key(args: argparse.Namespace) -> int:
    from tracker.domain.api_keys import create_api_key, parse_scopes

    try:
        scopes = parse_scopes(args.scopes)
    except InputError as exc:
        print(f"tracker: --scopes: {exc.message}", file=sys.stderr)
        return EXIT_USAGE

    async def job(conn: Any, settings: Settings) -> int:
        text, key = await create_api_key(conn, args.name, scopes)
        print(text)
        print(
            f"key {key.id} ({key.name!r}, scopes {','.join(sorted(key.scopes))}); it is shown only now", file=sys.stderr
        )
        return EXIT_OK

    return _run(job)


def cmd_list_api_keys(args: argparse.Namespace) -> int:
    from tracker.domain.api_keys import list_api_keys

    async def job(conn: Any, settings: Settings) -> int:
        keys = await list_api_keys(conn, include_revoked=args.all)
        if args.json:
            print(json.dumps([{**key, "created_at": _iso(key["created_at"]), "revoked_at": _iso(key["revoked_at"]),
                               "scopes": list(key["scopes"])} for key in keys], indent=2))  # fmt: skip
            return EXIT_OK
        if not keys:
            print("no API keys" if args.all else "no live API keys (--all shows revoked ones)")
        for key in keys:
            revoked = f"  revoked {_iso(key['revoked_at'])}" if key["revoked_at"] else ""
            print(f"{key['id']}  {','.join(key['scopes']):<10}  created {_iso(key['created_at'])}"
                  f"{revoked}  {key['name']}")  # fmt: skip
        return EXIT_OK

    return _run(job)


def cmd_revoke_api_key(args: argparse.Namespace) -> int:
    from tracker.domain.api_keys import key_id_of, revoke_api_key

    try:
        key_id = key_id_of(args.key)
    except InputError as exc:
        print(f"tracker: KEY: {exc.message}", file=sys.stderr)
        return EXIT_USAGE

    async def job(conn: Any, settings: Settings) -> int:
        if await revoke_api_key(conn, key_id):
            print(f"key {key_id} revoked", file=sys.stderr)
            return EXIT_OK
        print(f"tracker: no live API key with id {key_id} (unknown or revoked already)", file=sys.stderr)
        return EXIT_FAILED

    return _run(job)


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def cmd_register_message(args: argparse.Namespace) -> int:
    from tracker.domain.messages import honeypot_url, register_message, register_version

    try:
        content = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"tracker: FILE {args.file!r}: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def job(conn: Any, settings: Settings) -> int:
        trap = honeypot_url(settings)
        if args.message_id is not None:
            registered = await register_version(conn, args.message_id, content, trap)
        else:
            registered = await register_message(conn, args.channel, args.name, content, args.resource_id,
                                                honeypot_url=trap if args.honeypot else None)  # fmt: skip
        links = [
            {"index": i, "url": link.url, "attributes": link.attributes} for i, link in enumerate(registered.links)
        ]
        print(json.dumps({"id": registered.message_id, "version": registered.version, "channel": registered.channel,
                          "links": links}, indent=2))  # fmt: skip
        return EXIT_OK

    return _run(job)


def cmd_render(args: argparse.Namespace) -> int:
    from tracker.domain.render import render_message
    from tracker.domain.verdict_store import record_renders

    try:
        profile_ids = list(dict.fromkeys(int(part) for part in args.profiles.split(",") if part.strip()))
        if not profile_ids or min(profile_ids) < 1:
            raise ValueError
    except ValueError:
        print(f"tracker: --profiles {args.profiles!r}: expected comma-separated positive ids", file=sys.stderr)
        return EXIT_USAGE

    async def job(conn: Any, settings: Settings) -> int:
        settings.require("signing_keys")
        known = {r["id"] for r in await conn.fetch("select id from profiles where id = any($1::bigint[])", profile_ids)}
        missing = [p for p in profile_ids if p not in known]
        if missing:
            raise InputError("unknown_profiles", f"no such profiles: {','.join(map(str, missing))}")
        redis = None
        if settings.redis_url:
            from tracker.streams.cluster import plain_client

            redis = plain_client(settings.redis_url, settings.redis_cluster)
        try:
            _info, rendered = await render_message(conn, settings, args.message_id, profile_ids, args.version, redis)
            await record_renders(conn, args.message_id, profile_ids)  # the `too fast` rule's reference time
        finally:
            if redis is not None:
                await redis.aclose()
        for item in rendered:
            print(json.dumps({"profile_id": item.profile_id, "body": item.body, "headers": item.headers,
                              "push_urls": item.push_urls}))  # fmt: skip
        return EXIT_OK

    return _run(job)


def cmd_report_url(args: argparse.Namespace) -> int:
    import datetime as dt

    from tracker.domain.analytics.report_links import stored_message_link

    async def job(conn: Any, settings: Settings) -> int:
        if not settings.signing_keys:
            raise InputError("no_signing_keys", "TRACKER_SIGNING_KEYS is not set: report links are signed with it")
        link = await stored_message_link(conn, settings, args.message_id, args.page, args.version)
        print(link.url)
        print(f"expires {dt.datetime.fromtimestamp(link.expires_at, dt.UTC).isoformat()}", file=sys.stderr)
        return EXIT_OK

    return _run(job)

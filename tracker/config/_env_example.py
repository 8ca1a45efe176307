"""`deploy/env.example`, made from the settings: every variable with its default and what it sets.

docker compose reads `deploy/.env` (made from this file) twice: for the `${...}`
in compose.yaml, and as the `env_file` of the edge, the flusher and the
forwarder. So the file lists compose.yaml's own variables first, then every
setting of the programs. A line without `#` is one the operator sets (compose
refuses to start without the secrets among them); every other line is
commented out and shows what applies while it stays so: the setting's default,
or what compose.yaml sets. Secrets are empty (no secret has a default, and what
compose needs is left for the operator to fill in).

What compose.yaml needs and sets is declared here, beside the generator, and
tests/deploy/test_compose_wiring.py checks it against compose.yaml itself.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap

from tracker.config import Settings

# compose.yaml's own variables (not settings of the programs): name, value, what it sets, whether to set it.
COMPOSE_VARIABLES: tuple[tuple[str, str, str, bool], ...] = (
    ("POSTGRES_PASSWORD", "", "password of the compose Postgres (user and database `tracker`)", True),
    ("TRACKER_DOMAIN", "localhost",
     "public host name: Caddy serves it over TLS (a Let's Encrypt certificate; for localhost, one of Caddy's own"
     " CA) and links are minted for https://TRACKER_DOMAIN; its DNS must point here, ports 80 and 443 open", True),
    ("REDIS_MAXMEMORY", "1gb", "Redis' memory limit; the edge spools instead of writing to Redis near it", False),
    ("RABBITMQ_PASSWORD", "",
     "password of the user `tracker` of the RabbitMQ that `--profile rabbitmq` adds: set it before that profile's"
     " first start (the broker makes its user once, on an empty volume); action hooks reach it as"
     " amqp://tracker:RABBITMQ_PASSWORD@rabbitmq:5672/", False),
    ("TRACKER_EDGE_PORT", "8000", "port on this host's 127.0.0.1 where the edge answers directly (/metrics, "
     "/health/deps: the proxy does not serve them)", False),
    ("TRACKER_IMAGE", "tracking-edge:latest", "the image compose builds and runs the programs from", False),
)  # fmt: skip

# Settings compose needs from .env (uncommented; a secret's value left empty).
COMPOSE_NEEDS: tuple[str, ...] = ("TRACKER_SIGNING_KEYS",)

# Settings compose.yaml sets itself, from how it wires the services: a line in .env does not change them.
COMPOSE_SETS: dict[str, str] = {
    "REDIS_URL": "redis://redis:6379/0",
    "DATABASE_URL": "postgresql://tracker:${POSTGRES_PASSWORD}@postgres:5432/tracker",
    "TRACKER_PUBLIC_URL": "https://${TRACKER_DOMAIN}",
    "TRACKER_TRUST_FORWARDED_FOR": "true",  # the edge's only client is the proxy, which sets the header
    "TRACKER_SPOOL_DIR": "/var/lib/tracker/spool",  # the edge's volume
    "FLUSHER_CONSUMER": "flusher-1",
    "TRACKER_HOOKS_CONSUMER": "forwarder-1",
}

# Settings compose.yaml gives a default of its own (`${NAME:-value}`): a line in .env replaces it.
COMPOSE_DEFAULTS: dict[str, str] = {
    "TRACKER_HOOKS_ALLOWED_DESTINATIONS": "rabbitmq",  # its own RabbitMQ, on a private address
}

_TITLES = {
    "": "Shared by every program",
    "edge": "Edge (and the API it serves)",
    "reports": "Provider reports (served by the edge)",
    "pages": "Recipient pages (served by the edge)",
    "flusher": "Flusher",
    "forwarder": "Action-hook forwarder",
}
_NOTES = {
    "TRACKER_SIGNING_KEYS": "e.g. 1:$(openssl rand -base64 32)",
    "TRACKER_HOOKS_SECRET_KEYS": "e.g. 1:$(openssl rand -base64 32)",
    "TRACKER_HOOKS_ALLOWED_DESTINATIONS": "it lets hooks reach compose's RabbitMQ; keep rabbitmq in yours",
}
# A value with any of these is single-quoted: literal in compose's env files (no `$` expansion, no escapes).
_NEEDS_QUOTES = re.compile(r"[\s#$\"'\\]")
_HEADER = """\
# deploy/env.example: copy it to deploy/.env, fill in the empty values, and never commit the filled-in file.
#
#   cd deploy && cp env.example .env && docker compose up -d --build
#
# docker compose reads .env for the ${...} in compose.yaml and passes it to the edge, the flusher and the
# forwarder (env_file), so any setting below can be set here: remove its `#`. Lines without `#` are the ones
# to set ([set this]); a commented one shows what applies while it stays commented.
#
# Made from the settings by `python -m tracker.config --env-example --write deploy/env.example`
# (tests/deploy/test_compose_wiring.py fails when it differs); the README's settings table says more."""


def env_value(value: object) -> str:
    """A setting's default as the variable would spell it."""
    if value is None or value == {}:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def quoted(value: str) -> str:
    return f"'{value}'" if _NEEDS_QUOTES.search(value) else value


def _comment(text: str) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(text, 116, break_on_hyphens=False)]


def _setting_lines(env: str, default: str, doc: str) -> list[str]:
    if env in COMPOSE_NEEDS:
        doc += f" ({_NOTES[env]})" if env in _NOTES else ""
        return [*_comment(doc + " [set this]"), f"{env}={quoted(default)}"]
    if env in COMPOSE_SETS:
        # Shown as compose.yaml spells it, `${...}` included: uncommented, compose would expand it the same way.
        return [*_comment(doc + " [set by compose.yaml]"), f"# {env}={COMPOSE_SETS[env]}"]
    if env in COMPOSE_DEFAULTS:
        note = _NOTES.get(env, "")
        return [*_comment(f"{doc} [compose.yaml's default; {note}]"), f"# {env}={quoted(COMPOSE_DEFAULTS[env])}"]
    if env in _NOTES:
        doc += f" ({_NOTES[env]})"
    return [*_comment(doc), f"# {env}={quoted(default)}"]


def env_example() -> str:
    out = [_HEADER, "", "# == compose.yaml's own variables (not settings of the programs)"]
    for name, value, doc, needed in COMPOSE_VARIABLES:
        out += ["", *_comment(doc + (" [set this]" if needed else "")), f"{'' if needed else '# '}{name}={value}"]
    seen: set[str] = set()
    current = None
    for part_name, f in Settings.described():
        env = f.metadata["env"]
        if env in seen:  # read by two parts (the edge's and the pages' link ages): one line
            continue
        seen.add(env)
        if part_name != current:
            current = part_name
            out += ["", f"# == {_TITLES[part_name]}"]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out += ["", *_setting_lines(env, env_value(default), f.metadata["doc"])]
    return "\n".join(out) + "\n"

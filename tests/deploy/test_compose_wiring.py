"""deploy/compose.yaml, deploy/env.example and deploy/Caddyfile: what an operator sets reaches the programs.

env.example is made from the settings and lists every one; compose passes the
operator's .env to every program and sets only real settings itself; the
programs start from what compose gives them; action hooks may reach compose's
RabbitMQ; the proxy terminates TLS, sets X-Forwarded-For for an edge that
trusts it, and forwards the public routes only. Docker is not needed: the
files are parsed and compose's interpolation is done here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tracker.config import Settings, is_secret
from tracker.config.__main__ import main as config_main
from tracker.config._env_example import COMPOSE_DEFAULTS, COMPOSE_NEEDS, COMPOSE_SETS, COMPOSE_VARIABLES
from tracker.domain.destination_policy import DestinationPolicy
from tracker.domain.hook_definitions import AmqpDestination, check_reach

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ENV_EXAMPLE = DEPLOY / "env.example"
CADDYFILE = DEPLOY / "Caddyfile"
PROGRAMS = ("migrate", "edge", "flusher", "forwarder")
SETTINGS = {f.metadata["env"] for _, f in Settings.described()}
# What an operator types into .env before the first start.
FILLED_IN = {"POSTGRES_PASSWORD": "pg-secret", "TRACKER_SIGNING_KEYS": "1:c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0",
             "TRACKER_DOMAIN": "t.example.org"}  # fmt: skip


def services() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]


def env_lines() -> list[tuple[bool, str, str]]:
    """(set, name, value) of every variable line of env.example, commented (`# NAME=value`) or not."""
    found = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"(# )?([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            value = match.group(3)
            if value.startswith("'") and value.endswith("'"):  # literal, as compose reads it
                value = value[1:-1]
            found.append((match.group(1) is None, match.group(2), value))
    return found


def dot_env() -> dict[str, str]:
    """The .env an operator makes: env.example's lines without `#`, filled in."""
    return {name: FILLED_IN.get(name, value) for is_set, name, value in env_lines() if is_set}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?message}` (both for unset or empty)."""

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise LookupError(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", one, value)


def program_environment(name: str, env: dict[str, str]) -> dict[str, str]:
    """What the program's container gets: its env_file (.env), then `environment`, which wins."""
    service = services()[name]
    assert [entry["path"] for entry in service["env_file"]] == [".env"]
    return {**env, **{key: interpolate(str(value), env) for key, value in service["environment"].items()}}


# -- env.example -------------------------------------------------------------------------


def test_env_example_is_the_one_the_settings_make(tmp_path) -> None:
    assert config_main(["--env-example", "--check", str(ENV_EXAMPLE)]) == 0
    stale = tmp_path / "env.example"
    stale.write_text(ENV_EXAMPLE.read_text().replace("# TRACKER_STREAM_SHARDS=4\n", ""))
    assert config_main(["--env-example", "--check", str(stale)]) == 1
    assert config_main(["--env-example", "--write", str(stale)]) == 0
    assert stale.read_text() == ENV_EXAMPLE.read_text()


def test_env_example_lists_every_setting_once_and_sets_only_what_compose_needs() -> None:
    lines = env_lines()
    names = [name for _, name, _ in lines]
    assert len(names) == len(set(names))
    compose_variables = {name for name, *_ in COMPOSE_VARIABLES}
    assert set(names) == SETTINGS | compose_variables
    needed = {name for name, _, _, needed in COMPOSE_VARIABLES if needed}
    assert {name for is_set, name, _ in lines if is_set} == needed | set(COMPOSE_NEEDS)
    types = {f.metadata["env"]: f.type for _, f in Settings.described()}
    for _, name, value in lines:
        # Secret-looking names that hold a key or password (not a key's id): left empty.
        if is_secret(name) and types.get(name, "str") in ("str", "dict[int, bytes]"):
            assert value == "", f"{name} is a secret: env.example leaves it empty"
    # Each line has its description above it.
    text = ENV_EXAMPLE.read_text()
    assert "# Postgres, the source of truth [set by compose.yaml]\n# DATABASE_URL=" in text


def test_every_commented_setting_shows_its_default() -> None:
    compose_chooses = set(COMPOSE_SETS) | set(COMPOSE_DEFAULTS)
    shown = {name: value for is_set, name, value in env_lines()
             if not is_set and name in SETTINGS and name not in compose_chooses}  # fmt: skip
    assert len(shown) > 100
    # Uncommented as they are, they change nothing.
    assert repr(Settings.from_env(shown)) == repr(Settings.from_env({}))


# -- compose.yaml ------------------------------------------------------------------------


def test_every_program_reads_the_operators_env_file_and_compose_sets_only_real_settings() -> None:
    every = services()
    for name in PROGRAMS:
        environment = every[name]["environment"]
        assert [entry["path"] for entry in every[name]["env_file"]] == [".env"]
        assert set(environment) <= SETTINGS, f"{name}: not settings: {set(environment) - SETTINGS}"
        for key, value in environment.items():
            spelled = re.sub(r"\$\{([A-Z0-9_]+)(?::[-?][^}]*)?\}", r"${\1}", str(value))
            if key in COMPOSE_DEFAULTS:
                assert value == f"${{{key}:-{COMPOSE_DEFAULTS[key]}}}"
            elif key in COMPOSE_NEEDS:
                assert spelled == f"${{{key}}}"
            else:  # env.example says what compose sets it to
                assert COMPOSE_SETS[key] == spelled, key
    set_somewhere = {key for name in PROGRAMS for key in every[name]["environment"]}
    assert set(COMPOSE_SETS) | set(COMPOSE_DEFAULTS) | set(COMPOSE_NEEDS) <= set_somewhere


def test_every_variable_compose_reads_is_in_env_example() -> None:
    read = set(re.findall(r"\$\{([A-Z0-9_]+)", (DEPLOY / "compose.yaml").read_text()))
    listed = {name for _, name, _ in env_lines()}
    assert read <= listed
    assert {name for name, *_ in COMPOSE_VARIABLES} <= read  # none listed that compose no longer reads


def test_compose_refuses_to_start_without_the_secrets() -> None:
    env = dot_env()
    for secret in ("POSTGRES_PASSWORD", "TRACKER_SIGNING_KEYS"):
        with pytest.raises(LookupError, match=f"set {secret} in deploy/.env"):
            program_environment("edge", {**env, secret: ""})


def test_the_programs_start_from_what_compose_gives_them() -> None:
    env = dot_env()
    edge = Settings.from_env(program_environment("edge", env))
    assert edge.public_url == "https://t.example.org"  # links lead to the proxy
    assert edge.edge.trust_forwarded_for is True
    assert edge.database_url == "postgresql://tracker:pg-secret@postgres:5432/tracker"
    spool = next(v for v in services()["edge"]["volumes"] if v.startswith("edge-spool:"))
    assert str(edge.edge.spool_dir) == spool.split(":")[1]
    flusher = Settings.from_env(program_environment("flusher", env))
    forwarder = Settings.from_env(program_environment("forwarder", env))
    assert flusher.flusher.consumer and forwarder.forwarder.consumer
    assert flusher.edge.trust_forwarded_for is False  # only the edge has a proxy in front
    # A setting in .env reaches every program (provider credentials, branding, ...).
    branded = {**env, "TRACKER_BRAND_NAME": "Acme", "TRACKER_REPORT_GENERIC_EMAIL_SECRET": "s" * 32}
    for name in PROGRAMS:
        settings = Settings.from_env(program_environment(name, branded))
        assert settings.pages.brand_name == "Acme" and settings.reports.generic_email_secret == "s" * 32


def test_action_hooks_may_reach_the_compose_rabbitmq() -> None:
    env = dot_env()
    rabbitmq = services()["rabbitmq"]
    assert "ports" not in rabbitmq  # reachable from the compose network only
    user = rabbitmq["environment"]["RABBITMQ_DEFAULT_USER"]
    destination = AmqpDestination(url=f"amqp://{user}:pw@rabbitmq:5672/", queue="events")
    for name in ("edge", "forwarder"):  # the API checks a hook when it is defined, the forwarder at each connection
        policy = DestinationPolicy.from_settings(Settings.from_env(program_environment(name, env)))
        assert policy.name_allowed("rabbitmq") and check_reach(destination, policy) == ""
    # Without compose's allowance the name resolves to a private address, which hooks refuse.
    bare = DestinationPolicy.from_settings(Settings.from_env({}))
    assert not bare.name_allowed("rabbitmq")
    from ipaddress import ip_address

    assert "private" in bare.address_problem(ip_address("172.18.0.5"))
    # An operator's own list replaces compose's default.
    own = program_environment("forwarder", {**env, "TRACKER_HOOKS_ALLOWED_DESTINATIONS": "rabbitmq,crm.internal"})
    assert Settings.from_env(own).forwarder.allowed_destinations == ("rabbitmq", "crm.internal")


# -- the proxy ---------------------------------------------------------------------------


def caddy_site() -> tuple[str, list[str], str, list[str]]:
    """(site address, paths of @public, upstream of reverse_proxy, its header_up lines) of deploy/Caddyfile."""
    lines = [line.split("#")[0].strip() for line in CADDYFILE.read_text().splitlines()]
    lines = [line for line in lines if line]
    site = lines[0].removesuffix("{").strip()
    [public] = [line for line in lines if line.startswith("@public path ")]
    [proxy] = [line for line in lines if line.startswith("reverse_proxy ")]
    headers = [line for line in lines if line.startswith("header_up ")]
    assert lines[-3:] == ["respond 404", "}", "}"], "anything else: 404 from Caddy"
    return site, public.split()[2:], proxy.split()[1], headers


def caddy_path_matches(pattern: str, path: str) -> bool:
    # Caddy's path matcher: exact, or a prefix when the pattern ends in `*`.
    return path.startswith(pattern[:-1]) if pattern.endswith("*") else path == pattern


def test_the_proxy_serves_tracking_domain_over_tls_and_forwards_to_the_edge() -> None:
    every = services()
    proxy, edge = every["proxy"], every["edge"]
    assert proxy["image"].startswith("caddy:")
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    assert any(volume.endswith(":/data") for volume in proxy["volumes"])  # certificates survive a restart
    assert {"80:80", "443:443"} <= set(proxy["ports"])
    assert proxy["environment"]["TRACKER_DOMAIN"] == "${TRACKER_DOMAIN:-localhost}"
    assert proxy["depends_on"]["edge"]["condition"] == "service_healthy"
    site, _, upstream, headers = caddy_site()
    assert site == "{$TRACKER_DOMAIN:localhost}"  # a host name: Caddy gets it a certificate
    port = edge["command"][edge["command"].index("--port") + 1]
    assert upstream == f"edge:{port}"
    # The edge reads the first address of X-Forwarded-For: the proxy sets it, whatever the client sent.
    assert "header_up X-Forwarded-For {remote_host}" in headers
    assert edge["environment"]["TRACKER_TRUST_FORWARDED_FOR"] == "true"
    # Straight to the edge only from this host (the proxy's side of the network aside).
    assert all(str(mapping).startswith("127.0.0.1:") for mapping in edge["ports"])


def sample_path(route_path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", route_path)


def test_the_proxy_forwards_the_public_routes_and_nothing_else(settings) -> None:
    from starlette.routing import Mount

    from edge.app import create_app

    _, paths, _, _ = caddy_site()

    def forwarded(path: str) -> bool:
        return any(caddy_path_matches(pattern, path) for pattern in paths)

    tracking = ["/o/TOKEN.gif", "/r/TOKEN", "/c/TOKEN", "/s/GrlX73", "/u/TOKEN", "/u/TOKEN/preferences",
                "/cf/TOKEN", "/p/TOKEN/open", "/ak.js", "/ak/e"]  # fmt: skip
    app_routes = []
    for route in create_app(settings).app.routes:
        path = sample_path(route.path) + ("/profiles" if isinstance(route, Mount) else "")
        app_routes.append(path)
    private = {"/metrics", "/health/deps"}
    assert private <= set(app_routes)
    for path in tracking + [p for p in app_routes if p not in private]:
        assert forwarded(path), f"{path} is a public route the proxy does not forward"
    for path in [*private, "/", "/metrics/", "/health/deps/x", "/admin", "/.env"]:
        assert not forwarded(path), f"{path} must not be reachable through the proxy"


def test_the_prometheus_scrape_example_sends_the_ops_token_to_the_edges_own_port() -> None:
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "scrape.yaml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer" and job["authorization"]["credentials_file"]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    published = [port for port in compose["services"]["edge"]["ports"] if port.startswith("127.0.0.1:")]
    assert published and all(target.endswith(":8000") for target in job["static_configs"][0]["targets"])
    assert scrape["rule_files"] == ["alerts.yaml"]

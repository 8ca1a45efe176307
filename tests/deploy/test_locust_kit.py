"""The Locust kit (bench/locust_seed.py, bench/locustfile.py) run headless against a real Granian edge.

An edge without a report secret (as `tracker run` starts it) answers 404 on the provider-report route:
the kit must skip that route, say so, and count no failures; with the seed's secret it must use it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rigs.edge_helpers import edge_env, real_edge

pytestmark = pytest.mark.slow  # a real Locust run: in the full run, out of the fast loop

ROOT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).parent / "locust"
REPORT = "POST /reports/email/generic"
SECRET = "locust-kit-report-secret"


def seed(settings, out: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.locust_seed", "--out", str(out), "--profiles", "20", "--links", "3"],
        cwd=ROOT, env=edge_env(settings, TRACKER_REPORT_GENERIC_EMAIL_SECRET=SECRET),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def run_locust(seed_file: Path, port: int, locustfile: str = "bench/locustfile.py") -> tuple[int, dict[str, dict], str]:
    """Exit code, the stats rows by "METHOD name", and the log of a 5 s headless run with 30 users."""
    done = subprocess.run(
        [str(LOCUST), "-f", locustfile, "--headless", "-u", "30", "-r", "30", "-t", "5s",
         "--host", f"http://127.0.0.1:{port}", "--json", "--loglevel", "INFO"],
        cwd=ROOT, env={**os.environ, "LOCUST_SEED_FILE": str(seed_file)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    rows = {f"{row['method']} {row['name']}": row for row in json.loads(done.stdout)}
    return done.returncode, rows, done.stderr


@pytest.mark.parametrize(
    ("edge_secret", "skip_reason"),
    [
        (None, "the edge answered 404: the route is not enabled there"),
        ("another-secret", "the edge refused the seed's signature (401)"),
    ],
    ids=["no-report-secret", "other-report-secret"],
)
async def test_a_disabled_report_route_is_skipped_and_said(
    settings, redis, free_port, tmp_path, edge_secret, skip_reason
) -> None:
    seed(settings, tmp_path / "seed.json")
    variables = {"TRACKER_REPORT_GENERIC_EMAIL_SECRET": edge_secret} if edge_secret else {}
    async with real_edge(settings, free_port, **variables):
        code, rows, log = run_locust(tmp_path / "seed.json", free_port)
    assert sum(row["num_requests"] for row in rows.values()) > 0, log
    assert {name: row["num_failures"] for name, row in rows.items() if row["num_failures"]} == {}, log
    assert code == 0, log
    assert REPORT not in rows
    assert f"skipped {REPORT} (not counted, no failures from it): {skip_reason}" in log


async def test_an_enabled_report_route_is_used(settings, redis, free_port, tmp_path) -> None:
    seed(settings, tmp_path / "seed.json")
    async with real_edge(settings, free_port, TRACKER_REPORT_GENERIC_EMAIL_SECRET=SECRET):
        code, rows, log = run_locust(tmp_path / "seed.json", free_port)
    assert {name: row["num_failures"] for name, row in rows.items() if row["num_failures"]} == {}, log
    assert code == 0, log
    # Weight 4 of 100 over about 200 requests: absent only if the task never ran (p < 1e-3).
    assert rows[REPORT]["num_requests"] > 0, log
    assert "skipped" not in log

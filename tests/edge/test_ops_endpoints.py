"""`/metrics` and `/health/deps` are the operator's: with TRACKER_OPS_TOKEN set they need it as a bearer token.

`/health` and `/ready` stay open for load balancers. Without the setting all four stay open (local runs,
tests, a private listener); the README tells production to set it.
"""

from __future__ import annotations

import pytest

from tests.rigs.edge_helpers import running_edge
from tracker.config import Settings, SettingsError

TOKEN = "ops-token-0123456789abcdef"


async def test_with_a_token_the_operator_s_endpoints_need_it_and_the_probes_stay_open(settings) -> None:
    async with running_edge(settings.replace(edge={"ops_token": TOKEN})) as (_app, client):
        for path in ("/metrics", "/health/deps"):
            for headers in ({}, {"authorization": "Bearer wrong-token-0123456789"}, {"authorization": TOKEN},
                            {"authorization": f"Basic {TOKEN}"}):  # fmt: skip
                refused = await client.get(path, headers=headers)
                assert refused.status_code == 401, (path, headers)
                assert refused.headers["www-authenticate"].startswith("Bearer")
                assert "edge_" not in refused.text and "spool" not in refused.text
            allowed = await client.get(path, headers={"authorization": f"Bearer {TOKEN}"})
            assert allowed.status_code in (200, 503), path  # 503: /health/deps saying what is wrong
        metrics = await client.get("/metrics", headers={"authorization": f"bearer {TOKEN}"})
        assert "edge_requests_total" in metrics.text
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/ready")).status_code == 200


async def test_without_a_token_every_endpoint_stays_open(settings) -> None:
    assert settings.edge.ops_token == ""
    async with running_edge(settings) as (_app, client):
        for path in ("/metrics", "/health/deps", "/health", "/ready"):
            assert (await client.get(path)).status_code in (200, 503), path


@pytest.mark.parametrize("value", ["short", "has a space 0123456789", "ünïcode-0123456789abcdef"])
def test_a_token_that_is_short_or_not_printable_ascii_is_refused_at_start(value: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"TRACKER_OPS_TOKEN": value})
    assert "TRACKER_OPS_TOKEN" in str(refused.value) and value not in str(refused.value)

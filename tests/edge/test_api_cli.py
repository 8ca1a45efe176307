"""`tracker create-api-key`, `register-message` and `render`: output, errors naming the bad value, exit codes."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TEST_KEYS
from tracker.ops.cli import main

HTML = '<html><body><a href="https://cli.example/" update-clicked_link="true">go</a></body></html>'


@pytest.fixture
def env(monkeypatch, database_url: str, redis_url: str, key_prefix: str) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TRACKER_STREAM_PREFIX", key_prefix)
    monkeypatch.setenv("TRACKER_SIGNING_KEYS", ",".join(f"{k}:{v.decode()}" for k, v in TEST_KEYS.items()))
    monkeypatch.setenv("TRACKER_PUBLIC_URL", "https://t.example")


@pytest.fixture
async def profile_id(pg) -> int:
    await pg.execute(
        "insert into profile_fields (name, type) values ('clicked_link', 'boolean') on conflict do nothing"
    )
    return await pg.fetchval("insert into profiles default values returning id")


def test_create_api_key_prints_the_key_once(env, capsys) -> None:
    assert main(["create-api-key", "--name", "platform", "--scopes", "read"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("trk_") and len(out.strip()) > 50
    assert "scopes read" in err and "shown only now" in err


def test_bad_scopes_are_a_usage_error_naming_the_value(env, capsys) -> None:
    assert main(["create-api-key", "--name", "x", "--scopes", "read,admin"]) == 2
    assert "'read,admin'" in capsys.readouterr().err


def test_register_then_render_a_message(env, capsys, tmp_path, profile_id: int) -> None:
    path = tmp_path / "mail.html"
    path.write_text(HTML)
    assert main(["register-message", str(path), "--channel", "email", "--name", "cli"]) == 0
    message = json.loads(capsys.readouterr().out)
    assert message["links"] == [
        {"index": 0, "url": "https://cli.example/", "attributes": {"update-clicked_link": "true"}}
    ]
    assert main(["render", str(message["id"]), "--profiles", str(profile_id)]) == 0
    [line] = capsys.readouterr().out.splitlines()
    rendered = json.loads(line)
    assert rendered["profile_id"] == profile_id
    assert 'href="https://t.example/c/' in rendered["body"] and "update-clicked_link" not in rendered["body"]


def test_errors_name_the_bad_value_and_exit_1_or_2(env, capsys, tmp_path, profile_id: int) -> None:
    assert main(["register-message", str(tmp_path / "missing.html")]) == 2
    assert "missing.html" in capsys.readouterr().err
    bad = tmp_path / "bad.html"
    bad.write_text('<a href="https://x.example/" update-nope="1">x</a>')
    assert main(["register-message", str(bad)]) == 1
    assert "update-nope" in capsys.readouterr().err
    assert main(["render", "1", "--profiles", "1,x"]) == 2
    assert "'1,x'" in capsys.readouterr().err
    assert main(["render", "999999999", "--profiles", str(profile_id)]) == 1
    assert "message 999999999 does not exist" in capsys.readouterr().err
    assert main(["render", "1", "--profiles", "999999998"]) == 1
    assert "999999998" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["register-message", "f", "--channel", "fax"])
    assert usage.value.code == 2


async def test_a_revoked_key_is_refused_from_its_next_request(env, settings, capsys) -> None:
    import asyncio

    from tests.rigs.api_helpers import running_api

    def tracker(*args: str) -> int:
        return main(list(args))

    # The commands run their own event loop: in a thread, beside this test's.
    assert await asyncio.to_thread(tracker, "create-api-key", "--name", "to revoke", "--scopes", "read") == 0
    key = capsys.readouterr().out.strip()
    key_id = key[4:16]
    assert await asyncio.to_thread(tracker, "list-api-keys", "--json") == 0
    listed = {k["id"]: k for k in json.loads(capsys.readouterr().out)}
    assert listed[key_id]["name"] == "to revoke" and listed[key_id]["scopes"] == ["read"]
    assert listed[key_id]["revoked_at"] is None and key[17:] not in json.dumps(listed)  # never the secret

    async with running_api(settings) as api:
        headers = {"authorization": f"Bearer {key}"}
        assert (await api.client.get("/api/v1/resources", headers=headers)).status_code == 200
        # The whole key is accepted as well as its id.
        assert await asyncio.to_thread(tracker, "revoke-api-key", key) == 0
        assert f"key {key_id} revoked" in capsys.readouterr().err
        refused = await api.client.get("/api/v1/resources", headers=headers)
        assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]

    assert await asyncio.to_thread(tracker, "revoke-api-key", key_id) == 1
    assert "no live API key" in capsys.readouterr().err
    assert await asyncio.to_thread(tracker, "list-api-keys") == 0
    assert key_id not in capsys.readouterr().out
    assert await asyncio.to_thread(tracker, "list-api-keys", "--all") == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith(key_id)]
    assert "revoked 20" in line and line.endswith("to revoke")
    assert await asyncio.to_thread(tracker, "revoke-api-key", "nothex!") == 2
    assert "12 hex digits" in capsys.readouterr().err

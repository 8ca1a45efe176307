"""Bulk import: JSON lines or CSV streamed in, applied in chunks, with a per-row report."""

from __future__ import annotations

import asyncio
import json
import secrets

import pytest

from tests.rigs.api_helpers import Api, running_api


@pytest.fixture
async def api(settings, pg) -> Api:
    await pg.execute("insert into profile_fields (name, type) values ('score', 'number') on conflict do nothing")
    await pg.execute(
        "insert into profile_fields (name, type, enum_values) values ('plan', 'enum', '{free,pro}')"
        " on conflict do nothing"
    )
    async with running_api(settings.replace(edge={"api_import_chunk_rows": 50})) as api:
        yield api


def tag() -> str:
    return secrets.token_hex(4)


async def post_import(api: Api, body, media: str, **params) -> dict:
    response = await api.call("POST", "/profiles/import", content=body, headers={"content-type": media}, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_json_lines_create_and_update_profiles_and_report_bad_rows(api: Api, pg) -> None:
    t = tag()
    existing = (await api.call("POST", "/profiles", json={"email": f"taken-{t}@example.com"})).json()
    lines = [
        {"external_id": f"{t}-1", "email": f"one-{t}@example.com", "fields": {"score": 1, "plan": "free"}},
        {"external_id": f"{t}-2", "fields": {"score": 2.5}},
        "{not json",
        {"external_id": f"{t}-3", "fields": {"colour": "red"}},
        {"external_id": f"{t}-4", "fields": {"plan": "gold"}},
        {"fields": {"score": 1}},
        {"external_id": f"{t}-5", "email": f"taken-{t}@example.com"},
        {"external_id": f"{t}-1", "fields": {"score": 10, "plan": None}},  # updates row 1's profile
        {"email": f"taken-{t}@example.com", "phone": "+14155550199", "fields": {"score": 7}},
    ]
    body = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n\n"
    summary = await post_import(api, body.encode(), "application/x-ndjson")
    assert {e["row"]: e["code"] for e in summary["errors"]} == {
        3: "malformed_json", 4: "unknown_field", 5: "invalid_field_value", 6: "no_key", 7: "duplicate_email"
    }  # fmt: skip
    assert (summary["rows"], summary["applied"], summary["created"], summary["updated"], summary["failed"]) == (
        9, 4, 2, 2, 5
    )  # fmt: skip
    assert "colour" in summary["errors"][1]["message"] and "plan" in summary["errors"][2]["message"]
    one = await pg.fetchrow("select email, fields from profiles where external_id = $1", f"{t}-1")
    assert (one["email"], json.loads(one["fields"])) == (f"one-{t}@example.com", {"score": 10})
    taken = await pg.fetchrow("select phone, fields from profiles where id = $1", existing["id"])
    assert (taken["phone"], json.loads(taken["fields"])) == ("+14155550199", {"score": 7})
    assert await pg.fetchval("select count(*) from profiles where external_id like $1", f"{t}-%") == 2


async def test_csv_with_quoted_cells_and_empty_cells_that_leave_values_alone(api: Api, pg) -> None:
    t = tag()
    csv_text = (
        "\ufeffexternal_id,email,score,plan\r\n"
        f'{t}-a,a-{t}@example.com,"1,5",pro\r\n'
        f'{t}-b,"b-{t}@example.com",3,\r\n'
        f'{t}-c,"not an\nemail",4,free\r\n'
        f"{t}-d,d-{t}@example.com,many,free\r\n"
        f"{t}-e,only-two-columns\r\n"
        f"{t}-b,,9,free\r\n"
    )
    summary = await post_import(api, csv_text.encode(), "text/csv")
    assert {e["row"]: e["code"] for e in summary["errors"]} == {
        1: "invalid_field_value", 3: "invalid_field_value", 4: "invalid_field_value", 5: "malformed_csv"
    }  # fmt: skip
    assert (summary["rows"], summary["created"], summary["updated"]) == (6, 1, 1)
    b = await pg.fetchrow("select email, fields from profiles where external_id = $1", f"{t}-b")
    assert (b["email"], json.loads(b["fields"])) == (f"b-{t}@example.com", {"score": 9, "plan": "free"})


async def test_an_unknown_csv_column_is_422_before_any_row_is_applied(api: Api, pg) -> None:
    t = tag()
    response = await api.call(
        "POST", "/profiles/import", content=f"external_id,colour\n{t},red\n".encode(), params={"format": "csv"}
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "unknown_field"
    assert "column 2" in response.json()["error"]["message"]
    assert await pg.fetchval("select count(*) from profiles where external_id = $1", t) == 0


async def test_a_body_that_breaks_off_reports_the_rows_applied_before_it(api: Api, pg) -> None:
    t = tag()
    body = f'external_id,score\n{t}-1,1\n{t}-2,2\n{t}-3,"3\n'.encode()
    response = await api.call("POST", "/profiles/import", content=body, headers={"content-type": "text/csv"})
    assert response.status_code == 400
    payload = response.json()
    assert payload["error"]["code"] == "malformed_csv" and "line 4" in payload["error"]["message"]
    assert (payload["summary"]["rows"], payload["summary"]["applied"]) == (2, 2)
    assert await pg.fetchval("select count(*) from profiles where external_id like $1", f"{t}-%") == 2


async def test_wrong_format_and_oversized_bodies_are_refused(api: Api, settings) -> None:
    response = await api.call("POST", "/profiles/import", content=b"x", headers={"content-type": "application/pdf"})
    assert (response.status_code, response.json()["error"]["code"]) == (415, "unsupported_format")
    too_long = str(settings.edge.api_import_max_bytes + 1)
    response = await api.call(
        "POST", "/profiles/import", content=b"x", headers={"content-type": "text/csv", "content-length": too_long},
    )  # fmt: skip
    assert (response.status_code, response.json()["error"]["code"]) == (413, "body_too_large")


async def test_a_large_import_is_applied_chunk_by_chunk_while_the_body_still_streams(api: Api, pg) -> None:
    t = tag()
    rows = 3000

    async def body():
        yield b"external_id,score\n"
        for start in range(0, rows, 500):
            yield "".join(f"{t}-{i},{i}\n" for i in range(start, start + 500)).encode()
            if start == 1000:
                # The rows sent so far are committed before the rest of the body exists.
                for _ in range(500):
                    if await pg.fetchval("select count(*) from profiles where external_id like $1", f"{t}-%") >= 1000:
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError("nothing was applied while the body was streaming")

    summary = await post_import(api, body(), "text/csv")
    assert (summary["rows"], summary["created"], summary["failed"]) == (rows, rows, 0)
    assert await pg.fetchval(
        "select sum((fields->>'score')::int) from profiles where external_id like $1", f"{t}-%"
    ) == sum(range(rows))

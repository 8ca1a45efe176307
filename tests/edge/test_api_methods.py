"""The API keeps HTTP's contract: one route per path, a 405 naming every method it serves, and a schema whose
bounds are the handlers' own (so what the schema allows is accepted and what it refuses is refused)."""

from __future__ import annotations

import re

from tests.rigs.api_helpers import OPENAPI, running_api
from tests.rigs.flusher_helpers import make_message, make_profiles, make_resource

_UNUSED = ("PUT", "PATCH", "DELETE", "POST", "OPTIONS", "TRACE")


def _sample(template: str) -> str:
    return re.sub(r"\{\w+\}", "1", template)


def _allowed(operations: dict) -> set[str]:
    methods = {method.upper() for method in operations}
    return methods | {"HEAD"} if "GET" in methods else methods


async def test_a_method_a_path_does_not_serve_is_a_405_naming_all_it_does(settings, pg) -> None:
    await make_profiles(pg, 1)
    async with running_api(settings) as api:
        for template, operations in OPENAPI["paths"].items():
            allowed = _allowed(operations)
            for method in (m for m in _UNUSED if m not in allowed):
                answer = await api.client.request(method, _sample(template), headers=api.auth())
                assert answer.status_code == 405, (method, template)
                assert set(answer.headers["allow"].split(", ")) == allowed, (method, template)
                assert answer.json()["error"]["code"] == "method_not_allowed"
        # `import` is no profile id: the path is /profiles/import's own, which takes POST only.
        patched = await api.client.patch("/api/v1/profiles/import", headers=api.auth())
        assert (patched.status_code, patched.headers["allow"]) == (405, "POST")
        options = await api.client.options("/api/v1/resources", headers=api.auth())
        assert options.status_code == 405 and set(options.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}


async def test_the_schema_states_the_bounds_the_handlers_read_with(settings, pg) -> None:
    profile_in = OPENAPI["components"]["schemas"]["ProfileIn"]["properties"]["external_id"]["anyOf"][0]
    assert (profile_in["minLength"], profile_in["maxLength"]) == (1, 200)
    clicks = OPENAPI["paths"]["/api/v1/messages/{message_id}/clicks"]["get"]["parameters"]
    version = next(p for p in clicks if p["name"] == "version")["schema"]
    assert version == {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
    for template, operations in OPENAPI["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and parameter["schema"].get("type") == "string":
                    assert parameter["schema"]["minLength"] == 1, (template, parameter["name"])
    lifetime = OPENAPI["paths"]["/api/v1/reports/lifetime"]["get"]["parameters"]
    assert next(p for p in lifetime if p["name"] == "resource")["required"] is True

    message, resource = await make_message(pg), await make_resource(pg)
    async with running_api(settings) as api:
        huge = await api.call("GET", f"/messages/{message}/clicks?version={2**31}")
        assert huge.status_code == 422
        for path in (f"/messages/{message}/report?from=", f"/reports/cohorts?resource={resource}&from=",
                     "/messages?name=", "/profiles/1/events?kind="):  # fmt: skip
            empty = await api.call("GET", path)
            assert empty.status_code == 422 and "is empty" in empty.json()["error"]["message"], path
        blank = await api.call("POST", "/profiles", json={"external_id": ""})
        assert blank.status_code == 422 and "external_id" in blank.json()["error"]["message"]
        assert (await api.call("POST", "/profiles/import?format=ndjson", content=b"")).status_code == 415


async def test_report_links_need_the_read_scope_only_and_changes_need_write(settings, pg) -> None:
    """A report link shows a browser what the key may already read, and changes nothing stored."""
    message = await make_message(pg)
    operation = OPENAPI["paths"]["/api/v1/report-links"]["post"]
    assert operation["x-required-scope"] == "read" and "read scope" in operation["summary"]
    async with running_api(settings) as api:
        made = await api.call("POST", "/report-links", key="read", json={"message_id": message})
        assert made.status_code == 201 and made.json()["url"]
        html = {"channel": "email", "content": "<a href='https://shop.example/'>x</a>"}
        assert (await api.call("POST", "/messages", key="read", json=html)).status_code == 403
        assert (await api.call("POST", "/report-links", key="write", json={"message_id": message})).status_code == 403

"""The API's OpenAPI 3.1 spec: what the daemon serves, what the code generates and what the
repository keeps (docs/openapi.json) are one and the same."""

from __future__ import annotations

import json

import httpx

from bridge.api.app import spec
from bridge.api.problems import PROBLEMS
from tests.api.parts import AUTH, running
from tests.helpers import REPO

COMMITTED = REPO / "docs" / "openapi.json"


def test_the_served_spec_is_the_committed_one_and_the_codes(daemon) -> None:
    committed = json.loads(COMMITTED.read_text())
    assert spec() == committed, "docs/openapi.json is stale: run `make docs`"
    with running(daemon) as bridge:
        served = httpx.get(bridge.proc.url + "/api/v1/openapi.json", headers=AUTH)
        assert served.status_code == 200
        assert served.json() == committed


def test_the_spec_describes_every_operation_its_bounds_and_its_problems() -> None:
    doc = spec()
    assert doc["openapi"].startswith("3.1")
    operations = {f"{m.upper()} {p}" for p, ms in doc["paths"].items() for m in ms}
    assert operations == {
        "GET /events", "GET /events/{event_id}", "POST /events/{event_id}/redeliver",
        "POST /redeliver", "GET /targets", "GET /targets/{name}",
        "POST /targets/{name}/enable", "POST /targets/{name}/disable",
        "POST /targets/{name}/reset", "GET /sources", "GET /sources/{name}",
        "POST /sources/{name}/poll", "GET /stream",
    }  # fmt: skip
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            assert {"401", "403", "422", "429", "503"} <= set(op["responses"]), (method, path)
            for status, answer in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert list(answer["content"]) == ["application/problem+json"]
            # Every list is bounded: each `limit` has a maximum.
            for param in op.get("parameters", []):
                if param["name"] in ("limit", "attempts"):
                    assert "maximum" in param["schema"], (path, param)
    body = doc["components"]["schemas"]["RangeBody"]["properties"]["limit"]
    assert body["maximum"] == 1000
    # Each problem type's status is one of the statuses the spec says it answers.
    statuses = {s for ms in doc["paths"].values() for op in ms.values() for s in op["responses"]}
    assert {str(status) for status, _ in PROBLEMS.values()} - statuses <= {"405"}

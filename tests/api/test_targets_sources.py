"""Targets and sources through the API, on the real daemon, against what the CLI reads."""

from __future__ import annotations

import json

from tests.api.parts import Bridge, assert_problem, running, wait_for_attempts
from tests.helpers import run_cli, wait_until


def cli_json(bridge: Bridge, *args: str) -> object:
    done = run_cli(*args, "--json", "-c", str(bridge.proc.config_path))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_targets_agree_with_the_cli_and_change_as_the_cli_changes_them(daemon) -> None:
    with running(daemon) as bridge:
        bridge.send("t1")
        wait_for_attempts(bridge, 3)
        wait_until(lambda: bridge.api.get("/targets/sink").json()["dead"] == 1)
        listed = bridge.api.get("/targets").json()["targets"]
        assert listed == cli_json(bridge, "targets")
        one = bridge.api.get("/targets/sink", params={"attempts": 2}).json()
        assert {k: one[k] for k in listed[0]} == listed[0]
        assert len(one["last_attempts"]) == 2 and one["last_attempts"][0]["status"] == 500
        assert one["disabled_reason"] is None
        assert_problem(bridge.api.get("/targets/sink", params={"attempts": 101}), 422,
                       "invalid-request")  # fmt: skip
        assert_problem(bridge.api.get("/targets/nope"), 404, "not-found")
        # Disable: the store says so, the CLI too; again changes nothing.
        off = bridge.api.post("/targets/sink/disable").json()
        assert off == {"target": "sink", "enabled": False, "changed": True}
        assert cli_json(bridge, "targets")[0]["enabled"] is False  # type: ignore[index]
        detail = bridge.api.get("/targets/sink").json()
        assert "through the API by bearer token" in detail["disabled_reason"]
        assert bridge.api.post("/targets/sink/disable").json()["changed"] is False
        on = bridge.api.post("/targets/sink/enable").json()
        assert on["changed"] is True and on["enabled"] is True
        # Reset: what `bridge target reset --json` says, the circuit closed.
        reset = bridge.api.post("/targets/sink/reset").json()
        assert reset["target"] == "sink" and reset["circuit"] == "closed"
        assert reset["retried"] == 0 and reset["enabled"] is True
        for action in ("enable", "disable", "reset"):
            assert_problem(bridge.api.post(f"/targets/nope/{action}"), 404, "not-found")
        log = bridge.proc.log()
        assert "api: bearer token disabled target sink (it was enabled)" in log
        assert "api: bearer token enabled target sink" in log


def test_sources_agree_with_bridge_status_json_field_for_field(daemon) -> None:
    with running(daemon) as bridge:
        bridge.send("s1")
        # The polled source has made its first poll (a failure: the peer has no /items).
        wait_until(lambda: bridge.api.get("/sources/items").json()["last_poll"] is not None)
        api = bridge.api.get("/sources").json()["sources"]
        status = cli_json(bridge, "status")
        assert api == status["sources"]  # type: ignore[index]
        assert {s["name"] for s in api} == {"orders", "items"}
        # One source: the same entry, and for a polled one its stored state.
        orders = bridge.api.get("/sources/orders").json()
        assert orders["poll"] is None and orders["events"] == 1
        items = bridge.api.get("/sources/items").json()
        assert items["poll"]["polls"] >= 1 and items["poll"]["token_kept"] is False
        assert items["poll"]["consecutive_failures"] >= 1 and items["poll"]["last_status"] == 404
        assert {k: items[k] for k in api[0]} == next(s for s in api if s["name"] == "items")
        assert_problem(bridge.api.get("/sources/nope"), 404, "not-found")


def test_poll_now_answers_as_the_old_path_does_and_a_budget_shows_its_use(daemon) -> None:
    with running(daemon) as bridge:
        # The `items` source under a budget (the config rewritten, then reloaded).
        path = bridge.proc.config_path
        text = path.read_text().replace("every: 1h,", "every: 1h, budget: upstream,")
        path.write_text("budgets:\n  upstream: {requests: 50, per: 1m}\n" + text)
        reloaded = run_cli("reload", "-c", str(path))
        assert reloaded.returncode == 0, reloaded.stderr
        budget = bridge.api.get("/sources/items").json()["poll"]["budget"]
        assert budget["name"] == "upstream" and budget["limit"] == 50 and budget["per_s"] == 60
        polled = bridge.api.post("/sources/items/poll")
        assert polled.status_code == 200, polled.text
        body = polled.json()
        assert body["source"] == "items" and body["polled"] is True and body["ok"] is False
        old = bridge.api.post(bridge.proc.url + "/api/poll/items")
        assert old.status_code == 200 and set(old.json()) == set(body)
        assert_problem(bridge.api.post("/sources/orders/poll"), 404, "not-found")
        assert_problem(bridge.api.post("/sources/nope/poll"), 404, "not-found")
        after = bridge.api.get("/sources/items").json()["poll"]["budget"]
        assert after["used"] >= 2  # the two polls asked for above

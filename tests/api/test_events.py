"""Events through the API, on the real daemon: the list's filters, cursors and bounds, one
event as `bridge event show --json` shows it, and redelivery one by one or by range."""

from __future__ import annotations

import json

from tests.api.parts import Bridge, assert_problem, running, wait_for_attempts
from tests.helpers import run_cli, wait_until


def _all_pages(bridge: Bridge, **params: object) -> list[str]:
    """Every page of the events of `orders` (the bridge's own events, of target `sink`
    failing, are left out)."""
    params.setdefault("source", "orders")
    ids, after, pages = [], None, 0
    while pages < 20:
        query = {**params, **({"after": after} if after else {})}
        page = bridge.api.get("/events", params=query).json()
        ids += [e["id"] for e in page["events"]]
        pages += 1
        after = page["next"]
        if after is None:
            return ids
    raise AssertionError("more pages than events")


def test_the_list_pages_by_cursor_filters_and_is_bounded(daemon) -> None:
    with running(daemon) as bridge:
        for i in range(7):
            bridge.send(f"o{i}", "order.created" if i % 2 else "order.paid")
        everything = bridge.api.get("/events", params={"limit": 500, "source": "orders"}).json()
        assert everything["next"] is None and len(everything["events"]) == 7
        newest_first = [e["id"] for e in everything["events"]]
        recorded = [e["recorded_ms"] for e in everything["events"]]
        assert recorded == sorted(recorded, reverse=True)
        # Pages of 3: each event once, in the same order, the last page without `next`.
        first = bridge.api.get("/events", params={"limit": 3, "source": "orders"}).json()
        assert len(first["events"]) == 3 and first["next"]
        assert _all_pages(bridge, limit=3) == newest_first
        # The admin pages' filters: a type glob, a subject, the worst delivery.
        created = _all_pages(bridge, type="order.c*", limit=2)
        assert len(created) == 3
        assert all(bridge.api.get(f"/events/{i}").json()["event"]["type"] == "order.created"
                   for i in created)  # fmt: skip
        assert [e["subject"] for e in bridge.api.get(
            "/events", params={"subject": "o4"}).json()["events"]] == ["o4"]  # fmt: skip
        assert (
            bridge.api.get("/events", params={"delivery": "none", "source": "orders"}).json()[
                "events"
            ]
            == []
        )
        assert bridge.api.get("/events", params={"since": "2999-01-01T00:00"}).json() == {
            "events": [], "next": None}  # fmt: skip
        # Bounds and problems.
        assert_problem(bridge.api.get("/events", params={"limit": 501}), 422, "invalid-request")
        assert_problem(bridge.api.get("/events", params={"limit": 0}), 422, "invalid-request")
        assert_problem(bridge.api.get("/events", params={"after": "not-a-cursor"}), 400,
                       "bad-cursor")  # fmt: skip
        bad_time = assert_problem(
            bridge.api.get("/events", params={"since": "yesterday"}), 422, "invalid-request"
        )
        assert "yesterday" in bad_time["detail"]
        bad = assert_problem(bridge.api.get("/events", params={"origin": "mail"}), 422,
                             "invalid-request")  # fmt: skip
        assert bad["errors"][0]["where"] == "query.origin"


def test_one_event_is_what_bridge_event_show_says_and_redelivers(daemon) -> None:
    with running(daemon) as bridge:
        bridge.send("e1")
        event_id = bridge.event("e1")["id"]
        wait_for_attempts(bridge, 3)  # the first attempt and its two retries: dead
        wait_until(lambda: bridge.api.get(f"/events/{event_id}").json()["deliveries"][0][
            "status"] == "dead")  # fmt: skip
        shown = bridge.api.get(f"/events/{event_id}").json()
        (delivery,) = shown["deliveries"]
        assert delivery["target"] == "sink" and delivery["attempts"] == 3
        assert [a["status"] for a in delivery["history"]] == [500, 500, 500]
        assert "database is down" in delivery["history"][0]["excerpt"]
        cli = run_cli("event", "show", event_id, "--json", "-c", str(bridge.proc.config_path))
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout) == shown
        assert_problem(bridge.api.get("/events/no-such-event"), 404, "not-found")
        # Redeliver: to a target that is not configured, refused; then to all it had.
        unknown = bridge.api.post(f"/events/{event_id}/redeliver", json={"targets": ["nope"]})
        assert_problem(unknown, 422, "unknown-target")
        strange = bridge.api.post(f"/events/{event_id}/redeliver", json={"targets": "sink"})
        assert_problem(strange, 422, "invalid-request")
        missing = bridge.api.post("/events/no-such-event/redeliver")
        assert_problem(missing, 404, "not-found")
        bridge.receiver.fixed = True
        done = bridge.api.post(f"/events/{event_id}/redeliver")
        assert done.status_code == 200 and done.json()["queued"] == 1
        wait_until(lambda: bridge.api.get("/events", params={"subject": "e1"}).json()[
            "events"][0]["delivery"] == "delivered")  # fmt: skip
        assert f"api: bearer token redelivered {event_id} to every target" in bridge.proc.log()


def test_a_range_is_redelivered_page_by_page_and_a_dry_run_changes_nothing(daemon) -> None:
    with running(daemon) as bridge:
        for i in range(5):
            bridge.send(f"r{i}")
        wait_for_attempts(bridge, 15)
        wait_until(lambda: len(_all_pages(bridge, delivery="dead")) == 5)
        since = "2020-01-01T00:00:00Z"
        dry = bridge.api.post("/redeliver", json={"since": since, "status": "dead",
                                                  "dry_run": True, "limit": 3})  # fmt: skip
        assert dry.status_code == 200, dry.text
        page = dry.json()
        assert page["dry_run"] is True and page["queued"] == 0 and page["events"] == 3
        assert page["next"] and len(page["ids"]) == 3
        assert len(_all_pages(bridge, delivery="dead")) == 5  # nothing queued
        rest = bridge.api.post(
            "/redeliver",
            json={"since": since, "status": "dead", "dry_run": True, "after": page["next"]},
        )
        assert rest.json()["next"] is None and len(rest.json()["ids"]) == 2
        assert set(page["ids"]) | set(rest.json()["ids"]) == set(_all_pages(bridge))
        # A target's own delivery status, and a limit beyond the bound.
        by_target = bridge.api.post(
            "/redeliver",
            json={"since": since, "target": "sink", "status": "delivered", "dry_run": True},
        )
        assert by_target.json()["events"] == 0
        too_many = bridge.api.post("/redeliver", json={"since": since, "limit": 1001})
        assert_problem(too_many, 422, "invalid-request")
        assert_problem(bridge.api.post("/redeliver", json={}), 422, "invalid-request")
        assert_problem(bridge.api.post("/redeliver", json={"since": since, "dry_run": 0}),
                       422, "invalid-request")  # fmt: skip
        assert_problem(bridge.api.post("/redeliver", json={"since": since, "target": "nope"}),
                       422, "unknown-target")  # fmt: skip
        # Now for real, 3 then the rest.
        bridge.receiver.fixed = True
        first = bridge.api.post("/redeliver", json={"since": since, "status": "dead", "limit": 3})
        assert first.json()["queued"] == 3
        second = bridge.api.post(
            "/redeliver", json={"since": since, "status": "dead", "after": first.json()["next"]}
        )
        assert second.json()["queued"] == 2 and second.json()["next"] is None
        wait_until(lambda: len(_all_pages(bridge, delivery="delivered")) == 5)

"""Who may call the API, on the real daemon: the admin token as a bearer, never a cookie;
without a token only this machine's clients; no change a browser's page asks for."""

from __future__ import annotations

import json

import httpx

from bridge.api.app import spec
from tests.api.parts import Bridge, assert_problem, running
from tests.helpers import run_cli
from tests.web.admin_parts import TOKEN, log_in

# Every operation of the spec, with names that exist in the test config.
NAMES = {"{event_id}": "x", "{name}": "sink"}


def targets_in_store(bridge: Bridge) -> list[dict[str, object]]:
    """The targets as `bridge targets --json` reads them from the database."""
    done = run_cli("targets", "--json", "-c", str(bridge.proc.config_path))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def operations() -> list[tuple[str, str]]:
    out = []
    for path, methods in spec()["paths"].items():
        for placeholder, name in NAMES.items():
            path = path.replace(placeholder, name)
        if path.startswith("/sources/sink"):
            path = path.replace("/sources/sink", "/sources/items")
        out += [(method.upper(), path) for method in methods]
    return out


def test_every_operation_needs_the_token_and_a_session_cookie_is_not_enough(daemon) -> None:
    with running(daemon) as bridge:
        before = targets_in_store(bridge)
        ops = operations()
        assert len(ops) == 13
        with log_in(bridge.proc.url) as browser:  # holds a valid admin session cookie
            for method, path in ops:
                url = "/api/v1" + path
                body = {"since": "2020-01-01T00:00"} if path == "/redeliver" else None
                bare = browser.request(method, url, json=body)
                assert_problem(bare, 401, "unauthorized")
                assert bare.headers["www-authenticate"] == 'Bearer realm="bridge"'
                wrong = browser.request(
                    method, url, json=body, headers={"Authorization": "Bearer guess"}
                )
                assert wrong.status_code in (401, 429), (method, path, wrong.text)
        # Nothing changed, and the spec itself is guarded too.
        assert_problem(httpx.get(bridge.proc.url + "/api/v1/openapi.json"), 401, "unauthorized")
        assert targets_in_store(bridge) == before
        # Past the wrong tokens' limit even the right one waits (the admin pages' throttle).
        throttled = bridge.api.get("/targets")
        assert_problem(throttled, 429, "too-many-tokens")
        assert int(throttled.headers["retry-after"]) >= 1
        assert "api: " not in bridge.proc.log()
        assert TOKEN not in bridge.proc.log()


def test_without_a_token_a_client_a_proxy_not_listed_forwards_is_refused(daemon) -> None:
    with running(daemon, token=None) as bridge:
        # Served on loopback without a token, as the admin pages are.
        assert bridge.api.get("/targets").status_code == 200
        forwarded = {"X-Forwarded-For": "203.0.113.7"}
        assert_problem(bridge.api.get("/targets", headers=forwarded), 403, "forbidden")
        refused = bridge.api.post("/targets/sink/disable", headers=forwarded)
        assert_problem(refused, 403, "forbidden")
        assert bridge.api.get("/targets/sink").json()["enabled"] is True


def test_behind_a_trusted_proxy_a_client_elsewhere_is_refused_everywhere(daemon) -> None:
    with running(daemon, token=None, server="  trusted_proxies: [127.0.0.1/32]") as bridge:
        remote = {"X-Forwarded-For": "203.0.113.7"}
        for method, path in operations():
            body = {"since": "2020-01-01T00:00"} if path == "/redeliver" else None
            answer = bridge.api.request(method, path, headers=remote, json=body)
            assert_problem(answer, 403, "forbidden")
            assert "admin_token" in answer.json()["detail"]
        local = {"X-Forwarded-For": "127.0.0.1"}
        assert bridge.api.get("/targets", headers=local).status_code == 200
        assert bridge.api.get("/targets/sink").json()["enabled"] is True
        assert "api: " not in bridge.proc.log()


def test_a_post_a_browser_sent_is_refused_even_from_loopback(daemon) -> None:
    with running(daemon, token=None) as bridge:
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Origin": "null"}):  # fmt: skip
            answer = bridge.api.post("/targets/sink/disable", headers=headers)
            assert_problem(answer, 403, "forbidden")
        assert bridge.api.get("/targets/sink").json()["enabled"] is True
        # A script (no Origin) may.
        assert bridge.api.post("/targets/sink/disable").json()["changed"] is True


def test_a_host_name_not_this_machines_is_misdirected(daemon) -> None:
    with running(daemon, token=None) as bridge:
        answer = bridge.api.get("/targets", headers={"Host": "rebound.example"})
        assert_problem(answer, 421, "misdirected")

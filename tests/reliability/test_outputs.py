"""What the bridge puts out, on the real daemon and the real CLI: no secret of a URL in any
output, no metric label from request data, only strict JSON, and bounded attribute lengths.

(The log check of every test of the suite is in conftest.py.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import aiohttp
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import TEST_SECRET
from tests.helpers import DaemonProcess, run_cli, serve_app, wait_until
from tests.reliability.parts import Targets, query

pytestmark = pytest.mark.reliability

# -- defect 3: request data as metric labels -----------------------------------------------------

TYPES = 10_000
BATCH = 200  # requests in flight at once


def series(metrics_text: str) -> int:
    """How many samples (series) a `/metrics` text holds."""
    return sum(1 for line in metrics_text.splitlines() if line and not line.startswith("#"))


async def post_types(url: str, first: int, count: int) -> list[int]:
    """POST events of `count` distinct types, `BATCH` at a time; their statuses."""
    statuses: list[int] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def post(n: int) -> int:
            async with session.post(url, json={"id": f"e{n}", "type": f"t.{n}"}) as response:
                return response.status

        for start in range(first, first + count, BATCH):
            batch = range(start, min(start + BATCH, first + count))
            statuses += await asyncio.gather(*(post(n) for n in batch))
    return statuses


def test_ten_thousand_event_types_do_not_grow_the_metrics(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    proc = daemon(
        """
        database: bridge.db
        sources:
          open:
            webhook: {verify: none, allow_unsigned: true}
        """
    )
    hook = proc.url + "/hooks/open"
    # A few events first, so every series an event makes exists before the count.
    assert set(asyncio.run(post_types(hook, 0, 10))) == {202}
    before = series(httpx.get(proc.url + "/metrics", timeout=10).text)
    assert set(asyncio.run(post_types(hook, 10, TYPES))) == {202}
    text = httpx.get(proc.url + "/metrics", timeout=30).text
    after = series(text)
    stored = query(tmp_path / "bridge.db", "SELECT count(DISTINCT type) FROM events")
    assert proc.terminate() == 0
    assert stored == [(TYPES + 10,)]
    assert after - before <= 5, (before, after)
    assert 'bridge_events_total{origin="push",source="open"} 10010.0' in text


# -- defect 5: secrets of URLs in command output -----------------------------------------------

URL_SECRETS = ["SECRET1", "SECRET2", "pw@", "HEADERVALUE-of-the-masking-test"]


def masking_config(admin: str) -> str:
    """A target URL with a password and an api_key, a poll URL with a token and a parameter
    whose value is a configured secret (the poll's header), both on ports nobody serves."""
    return f"""
        database: bridge.db
        server:
          listen: 127.0.0.1:{{port}}
          admin_token: {admin}
        sources:
          hooks:
            webhook: {{verify: none, allow_unsigned: true}}
          api:
            poll:
              url: "http://127.0.0.1:9/items?token=SECRET2&q=HEADERVALUE-of-the-masking-test"
              headers: {{X-Api-Key: HEADERVALUE-of-the-masking-test}}
              every: 200ms
              timeout: 1s
              id: id
        targets:
          sink:
            url: "http://user:pw@127.0.0.1:9/hook?api_key=SECRET1&x=1"
            secret: {TEST_SECRET}
            timeout: 1s
            retry: [100ms]
        """


def test_no_url_secret_in_any_command_output_page_or_log(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    admin = "admin-token-of-the-masking-test"
    proc = daemon(masking_config(admin), "--log-level", "debug")
    config = str(proc.config_path)
    r = httpx.post(proc.url + "/hooks/hooks", json={"id": "e1", "type": "t"}, timeout=10)
    assert r.status_code == 202
    db = tmp_path / "bridge.db"
    # The delivery fails twice (nothing listens) and is dead; the poll fails and is recorded.
    wait_until(lambda: query(db, "SELECT status FROM deliveries") == [("dead",)], timeout_s=20)
    wait_until(lambda: query(db, "SELECT 1 FROM poll_state WHERE failures >= 2"), timeout_s=20)
    commands = [
        ("check",),
        ("targets",),
        ("targets", "--json"),
        ("status",),
        ("status", "--json"),
        ("deliveries", "--json"),
        ("events", "--json"),
        ("poll", "api", "--dry-run"),
    ]
    outputs = {args: run_cli(*args, "-c", config) for args in commands}
    bearer = {"Authorization": f"Bearer {admin}"}
    pages = [httpx.get(proc.url + p, headers=bearer, timeout=10).text for p in ("/", "/api/status")]
    assert proc.terminate() == 0
    shown = [o.stdout + o.stderr for o in outputs.values()] + pages + [proc.log()]
    for text in shown:
        assert not [s for s in URL_SECRETS if s in text], text
    check = outputs[("check",)].stdout
    assert "http://user:***@127.0.0.1:9/hook?api_key=***&x=1" in check
    assert "http://127.0.0.1:9/items?token=***&q=***" in check
    listed = json.loads(outputs[("targets", "--json")].stdout)
    assert listed[0]["url"] == "http://user:***@127.0.0.1:9/hook?api_key=***&x=1"
    assert "api_key=***" in outputs[("targets",)].stdout


# -- defect 9: credentials in a target URL plus an authorization header ------------------------


def test_credentials_in_the_url_and_an_authorization_header_are_refused(
    write_config: Callable[..., Path],
) -> None:
    path = write_config(
        f"""
        targets:
          sink:
            url: "http://user:pw@127.0.0.1:9/hook"
            secret: {TEST_SECRET}
            headers:
              Authorization: Bearer a-token-of-the-credentials-test
        """
    )
    for args in (("check",), ("run",)):
        result = run_cli(*args, "-c", str(path), timeout_s=30)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"{path}:2: targets.sink: has credentials in its url and an authorization header: "
            "keep one of them"
        ]
        assert "pw" not in result.stderr and "a-token" not in result.stderr


def test_an_attempt_that_fails_before_the_request_says_why(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    # Port 99999 passes the config's URL check but no client can connect to it: the
    # attempt's error names the exception and its message, with the URL's secrets masked.
    proc = daemon(
        f"""
        database: bridge.db
        sources:
          hooks:
            webhook: {{verify: none, allow_unsigned: true}}
        targets:
          sink:
            url: "http://user:pw@127.0.0.1:99999/hook?token=SECRET1"
            secret: {TEST_SECRET}
            retry: [100ms]
        """
    )
    r = httpx.post(proc.url + "/hooks/hooks", json={"id": "e1", "type": "t"}, timeout=10)
    assert r.status_code == 202
    db = tmp_path / "bridge.db"
    wait_until(lambda: query(db, "SELECT status FROM deliveries") == [("dead",)], timeout_s=20)
    errors = {row[0] for row in query(db, "SELECT error FROM attempts")}
    assert proc.terminate() == 0
    assert errors == {"InvalidUrlClientError: http://user:***@127.0.0.1:99999/hook?token=***"}


# -- defect 8: numbers that are not finite ------------------------------------------------------


def strict(text: str) -> object:
    """`text` parsed as strict JSON: NaN, Infinity and overflowing numbers refused."""

    def refuse(value: str) -> object:
        raise ValueError(f"not strict JSON: {value}")

    return json.loads(text, parse_constant=refuse, parse_float=strict_float)


def strict_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"not strict JSON: {text}")
    return value


def test_non_finite_numbers_are_refused_and_everything_written_is_strict(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    async def items(request: Request) -> Response:
        body = b'{"data": [{"id": "a", "amount": 1e400}]}'
        return Response(body, media_type="application/json")

    targets = Targets(secret=TEST_SECRET)
    upstream = Starlette(routes=[Route("/items", items)])
    with serve_app(targets.app()) as sink, serve_app(upstream) as api:
        proc = daemon(
            f"""
            database: bridge.db
            sources:
              open:
                webhook: {{verify: none, allow_unsigned: true}}
              api:
                poll: {{url: "{api}/items", items: data, id: id, every: 200ms}}
            targets:
              sink: {{url: "{sink}/sink", secret: {TEST_SECRET}}}
            """
        )
        hook = proc.url + "/hooks/open"
        for n, number in enumerate(["1e400", "-1e400", "NaN", "Infinity", "-Infinity"]):
            body = f'{{"id": "bad{n}", "type": "t", "x": {number}}}'
            r = httpx.post(hook, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400, number
            assert r.json() == {"error": "the body is not valid JSON"}
        # Large but finite numbers pass through unchanged.
        body = '{"id": "ok", "type": "t", "x": 1e308, "n": 1' + "0" * 300 + "}"
        assert httpx.post(hook, content=body).status_code == 202
        db = tmp_path / "bridge.db"
        wait_until(lambda: query(db, "SELECT 1 FROM poll_state WHERE failures >= 2"), timeout_s=20)
        wait_until(lambda: targets.on("sink"), timeout_s=20)
        (error,) = query(db, "SELECT last_error FROM poll_state")[0]
        metrics = httpx.get(proc.url + "/metrics", timeout=10).text
        outputs = [
            run_cli(*args, "-c", str(proc.config_path))
            for args in (("events", "--json"), ("deliveries", "--json"), ("status", "--json"))
        ]
        assert proc.terminate() == 0
    assert query(db, "SELECT upstream_id FROM events WHERE source != 'bridge'") == [("ok",)]
    assert "not valid JSON" in error
    assert 'bridge_poll_errors_total{reason="json",source="api"}' in metrics
    (hit,) = targets.on("sink")
    delivered = strict(hit.body.decode())
    assert isinstance(delivered, dict)
    assert delivered["data"]["x"] == 1e308 and delivered["data"]["n"] == 10**300
    for output in outputs:
        assert output.returncode == 0, output.stderr
        strict(output.stdout)


# -- defect 12: attribute lengths ---------------------------------------------------------------


def test_attributes_longer_than_the_limit_are_refused_or_skipped(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    long_key = "k" * 2000

    async def items(request: Request) -> Response:
        return Response(json.dumps({"data": [{"id": "a"}, {"id": long_key}]}))

    with serve_app(Starlette(routes=[Route("/items", items)])) as api:
        proc = daemon(
            f"""
            database: bridge.db
            sources:
              open:
                webhook: {{verify: none, allow_unsigned: true}}
              api:
                poll: {{url: "{api}/items", items: data, id: id, every: 200ms, baseline: emit}}
            """
        )
        hook = proc.url + "/hooks/open"
        for body, attribute in (
            ({"id": "e1", "type": "t" * 100_000}, "type"),
            ({"id": "i" * 1025, "type": "t"}, "id"),
        ):
            r = httpx.post(hook, json=body, timeout=10)
            assert r.status_code == 422
            assert r.json() == {"error": f"the event's {attribute} is longer than 1024 bytes"}
        assert httpx.post(hook, json={"id": "i" * 1024, "type": "t" * 1024}).status_code == 202
        db = tmp_path / "bridge.db"
        wait_until(lambda: query(db, "SELECT 1 FROM events WHERE source = 'api'"), timeout_s=20)
        metrics = httpx.get(proc.url + "/metrics", timeout=10).text
        assert proc.terminate() == 0
    stored = query(db, "SELECT source, length(type), length(upstream_id) FROM events ORDER BY 1")
    assert stored == [("api", len("api.created"), 1), ("open", 1024, 1024)]
    assert 'bridge_inbound_rejected_total{reason="too_long",source="open"} 2.0' in metrics
    assert 'bridge_poll_items_skipped_total{reason="too_long",source="api"}' in metrics
    assert "api: skipped 1 items whose key is longer than 1024 bytes" in proc.log()

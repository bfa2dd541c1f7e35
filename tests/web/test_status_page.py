"""The status page: rendered by headless Chromium from the real daemon, and who may see it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.config import parse_config
from bridge.daemon.app import build_app
from bridge.events import Event, event_id, now_ms
from bridge.runtime import Runtime
from bridge.store import NewEvent
from bridge.store.sqlite import SQLiteStore
from bridge.web.status import Status, content_security_policy, render_page
from tests.conftest import TEST_SECRET
from tests.helpers import REPO, serve_app, wait_until
from tests.reliability.parts import signed_headers

ARTIFACTS = REPO / "test-artifacts"
TOKEN = "page-token-3f9a1c"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and Path("/usr/bin/chromium").exists():
        found = "/usr/bin/chromium"
    if found is None:
        pytest.skip(
            "chromium is not installed and could not be (make test installs Debian's chromium "
            "when run as root): the status page cannot be rendered in a browser here"
        )
    return found


def upstream_app() -> Starlette:
    """A pollable list and a receiving target, so the engines have real peers."""

    async def items(request: Request) -> Response:
        return JSONResponse({"items": []}, headers={"etag": '"v0"'})

    async def hook(request: Request) -> Response:
        return Response(status_code=204)

    return Starlette(routes=[Route("/items", items), Route("/hook", hook, methods=["POST"])])


def config_text(peer: str, server: str = "") -> str:
    return f"""
{server}
database: page.db
sources:
  items-poll:
    poll: {{url: "{peer}/items", every: 1h, items: items, id: id, version: updated_at,
            time: updated_at}}
  items-push:
    webhook: {{verify: standard-webhooks, secrets: ["{TEST_SECRET}"], subject: body.data.id,
               time: body.data.updated_at}}
targets:
  sink: {{url: "{peer}/hook", secret: "{TEST_SECRET}"}}
compare:
  - {{poll: items-poll, push: items-push}}
"""


def fill(db: Path) -> None:
    """Twenty changes seen by both paths: polled seconds late, pushed milliseconds late."""
    store = SQLiteStore(db)
    store.open()
    base = now_ms() - 300_000
    events = []
    for i in range(20):
        at = base + i * 10_000
        for source, origin, late_ms in (
            ("items-push", "push", 5 + i),
            ("items-poll", "poll", 900 + 100 * i),
        ):
            events.append(
                Event(
                    id=event_id(source, f"item_{i}"),
                    source=source,
                    type=f"{source}.updated",
                    origin=origin,  # type: ignore[arg-type]
                    data={"id": f"item_{i}"},
                    recorded_ms=at + late_ms,
                    subject=f"item_{i}",
                    time_ms=at,
                )
            )
    # The last change also went to the target, and its delivery died.
    batch = [NewEvent(e, ["sink"] if e is events[-1] else []) for e in events]

    async def record() -> None:
        await store.record_events(batch)
        await store.write(
            lambda conn: conn.execute("UPDATE deliveries SET status = 'dead', attempts = 8")
        )

    asyncio.run(record())
    store.close()


def browse(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
        *args,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_page_renders_sources_targets_events_and_chart(daemon, tmp_path: Path) -> None:
    fill(tmp_path / "page.db")
    with serve_app(upstream_app()) as peer:
        proc = daemon(config_text(peer))
        api = httpx.get(proc.url + "/api/status").json()
        assert [s["name"] for s in api["sources"]] == ["items-poll", "items-push"]
        assert {s["source"]: s["count"] for s in api["chart"]["sources"]} == {
            "items-poll": 20,
            "items-push": 20,
        }
        assert api["pairs"][0]["matched"] == 20
        # Each source's received count too: a push source without upstream times shows by it.
        assert {s["source"]: s["events"] for s in api["chart"]["sources"]} == {
            "items-poll": 20,
            "items-push": 20,
        }
        assert api["targets"] == [
            {
                "name": "sink",
                "health": "dead letters",
                "circuit": "closed",
                "backlog": 0,
                "dead": 1,
                "last_error": None,
            }
        ]

        def statuses() -> dict[str, str]:
            sources = httpx.get(proc.url + "/api/status").json()["sources"]
            return {s["name"]: s["status"] for s in sources}

        # The poller's first poll (its baseline) comes right after start.
        wait_until(lambda: statuses() == {"items-poll": "ok", "items-push": "ok"})

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "status-page.png"
        shot.unlink(missing_ok=True)
        taken = browse(proc.url + "/", tmp_path, f"--screenshot={shot}")
        assert taken.returncode == 0, taken.stderr[-2000:]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # Enough page time for the page to refresh itself from /api/status at least once.
        dumped = browse(proc.url + "/", tmp_path, "--virtual-time-budget=5000", "--dump-dom")
        assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    refreshes = re.search(r'<body[^>]*data-refreshes="(\d+)"', dom)
    assert refreshes and int(refreshes.group(1)) >= 1, "the page did not refresh itself"
    sources = dom[dom.index('id="sources"') : dom.index('id="targets"')]
    assert 'data-name="items-poll"' in sources and 'data-name="items-push"' in sources
    assert "webhook /hooks/items-push" in sources
    targets = dom[dom.index('id="targets"') : dom.index('id="chart"')]
    assert 'data-name="sink"' in targets
    # The chart: one row per source with bars for p50, p90 and p99, drawn by the page.
    for source, origin in (("items-poll", "poll"), ("items-push", "push")):
        row = re.search(
            rf'<g class="chart-row" data-source="{source}" data-origin="{origin}">(.*?)</g>', dom
        )
        assert row, f"no chart row for {source}"
        assert all(f'class="bar {key}"' in row.group(1) for key in ("p50", "p90", "p99"))
    assert "20 changes seen by both" in dom
    assert dom.count("items-poll.updated") >= 5  # recent events


HOSTILE = ["</script><script>alert(1)</script>", "<!--<script>", "]]></x>&amp;"]


def test_page_inlines_data_safely() -> None:
    data = {"sources": [{"name": name} for name in HOSTILE]}
    page = render_page(data)
    for name in HOSTILE:
        assert name not in page
    assert "\\u003c!--\\u003cscript\\u003e" in page
    # The data block holds the data as it was, and nothing of it is in the code.
    block = re.search(r'<script type="application/json" id="initial-status">(.*?)</script>', page)
    assert block and json.loads(block.group(1)) == data
    assert "alert" not in page.replace(block.group(0), "")


def test_the_policy_allows_exactly_the_page_s_own_script_and_style() -> None:
    page = render_page({"events": [{"type": "<!--<script>"}]})
    policy = content_security_policy(page)
    assert policy == content_security_policy(render_page({}))  # data never changes it
    assert "frame-ancestors 'none'" in policy and "unsafe" not in policy
    code = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    assert len(code) == 1
    digest = base64.b64encode(hashlib.sha256(code[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}';" in policy


def test_the_page_fills_its_tables_with_an_event_type_of_comment_script(
    daemon, tmp_path: Path
) -> None:
    browser = chromium()
    with serve_app(upstream_app()) as peer:
        proc = daemon(config_text(peer))
        for i, kind in enumerate(HOSTILE):
            body = json.dumps({"type": kind, "data": {"id": f"item_{i}"}}).encode()
            headers = signed_headers(TEST_SECRET, f"msg_{i}", body)
            r = httpx.post(proc.url + "/hooks/items-push", content=body, headers=headers)
            assert r.status_code == 202
        page = httpx.get(proc.url + "/")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert "<!--<script>" not in page.text
        profile = tmp_path / "chromium-hostile"
        dumped = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--enable-logging=stderr", "--v=0",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom",
             proc.url + "/"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    refreshes = re.search(r'<body[^>]*data-refreshes="(\d+)"', dom)
    assert refreshes and int(refreshes.group(1)) >= 1, "the page did not refresh itself"
    events = dom[dom.index('id="events"') :]
    assert "&lt;!--&lt;script&gt;" in events and "&lt;/script&gt;&lt;script&gt;alert" in events
    sources = dom[dom.index('id="sources"') : dom.index('id="targets"')]
    assert 'data-name="items-push"' in sources
    assert "Content Security Policy" not in dumped.stderr, "the policy blocked the page"


@pytest.fixture
def runtime(tmp_path: Path):
    """A runtime over a real store, for serving the page with a chosen server config."""
    made: list[SQLiteStore] = []

    def make(server: str, is_loopback: bool = False) -> Runtime:
        config = parse_config(config_text("http://127.0.0.1:9", server))
        store = SQLiteStore(tmp_path / f"auth-{len(made)}.db")
        store.open()
        made.append(store)
        return Runtime(config=config, store=store, is_ready=True, is_loopback=is_loopback)

    yield make
    for store in made:
        store.close()


def serve_status(runtime: Runtime):
    return serve_app(build_app(runtime, Status(runtime).routes()))


def test_with_a_token_the_page_needs_it(runtime) -> None:
    rt = runtime(f"server: {{listen: '0.0.0.0:8080', admin_token: {TOKEN}}}")
    with serve_status(rt) as url:
        for path in ("/", "/api/status"):
            assert httpx.get(url + path).status_code == 401
            wrong = httpx.get(url + path, headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert TOKEN not in wrong.text
            basic = httpx.get(url + path, headers={"authorization": f"Basic {TOKEN}"})
            assert basic.status_code == 401
            ok = httpx.get(url + path, headers={"authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200, path
        assert httpx.get(url + "/healthz").status_code == 200


def test_without_a_token_only_loopback_is_served(runtime) -> None:
    # The runtime says whether the daemon's socket is bound to a loopback address (the test
    # server itself stays on 127.0.0.1); the text of server.listen decides nothing.
    exposed = runtime("server: {listen: '127.0.0.1:8080'}", is_loopback=False)
    with serve_status(exposed) as url:
        refused = httpx.get(url + "/")
        assert refused.status_code == 403
        assert "admin_token" in refused.text
        assert httpx.get(url + "/api/status").status_code == 403
    local = runtime("server: {listen: '0.0.0.0:8080'}", is_loopback=True)
    with serve_status(local) as url:
        page = httpx.get(url + "/")
        assert page.status_code == 200 and "items-poll" in page.text
        assert httpx.get(url + "/api/status").json()["targets"][0]["name"] == "sink"

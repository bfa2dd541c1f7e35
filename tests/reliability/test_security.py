"""Security: no secret in any log or command output, even at debug level and under every
fault that logs; timestamps outside the tolerance refused; admin routes need the token.

(That no redirect is ever followed on delivery is in test_target_faults.py: a 302 target's
Location is never requested. Every test of this suite also ends with the log check, in
conftest.py.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.helpers import DaemonProcess, run_cli, serve_app, wait_until
from tests.reliability.parts import (
    INBOUND_SECRET,
    TARGET_SECRET,
    leaked_secrets,
    query,
    signed_headers,
)

pytestmark = pytest.mark.reliability

# The events of the requests sent, not the bridge's own (of a target failing).
SENT = "SELECT upstream_id FROM events WHERE source != 'bridge'"

GITHUB_SECRET = "github-secret-of-the-security-test"
POLL_TOKEN = "poll-token-of-the-security-test"
QUERY_TOKEN = "query-token-of-the-security-test"
TARGET_KEY = "target-api-key-of-the-security-test"
ADMIN_TOKEN = "admin-token-of-the-security-test"
OTHER_SECRET = "whsec_" + base64.b64encode(b"a key that nobody configured!!!!").decode()
ALL = [
    INBOUND_SECRET,
    TARGET_SECRET,
    GITHUB_SECRET,
    POLL_TOKEN,
    QUERY_TOKEN,
    TARGET_KEY,
    ADMIN_TOKEN,
]


def echo_app() -> Starlette:
    """An upstream that answers badly, echoing what it got (secrets included), and a target
    that never succeeds."""
    calls = {"items": 0, "sink": 0}

    async def answer(request: Request) -> Response:
        path = request.path_params["path"]
        n = calls[path] = calls.get(path, 0) + 1
        if path == "sink":
            status = [500, 302, 401][n % 3]
            return Response("no", status_code=status, headers={"Location": "/elsewhere"})
        text = f"{dict(request.headers)} {request.url}"
        status = [401, 500, 302, 200][n % 4]
        if status == 200:
            return Response("{not json " + text, status_code=200)
        return Response(text, status_code=status, headers={"Location": f"/x?{text[:100]}"})

    return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST"])])


def test_no_secret_in_logs_or_output_under_faults_at_debug_level(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    with serve_app(echo_app()) as url:
        proc = daemon(
            f"""
            database: bridge.db
            server:
              listen: 127.0.0.1:{{port}}
              admin_token: {ADMIN_TOKEN}
            sources:
              orders:
                webhook:
                  verify: standard-webhooks
                  secrets: [{INBOUND_SECRET}]
              gh:
                webhook:
                  verify: github
                  secrets: [{GITHUB_SECRET}]
              api:
                poll:
                  url: {url}/items
                  params: {{token: {QUERY_TOKEN}}}
                  headers: {{Authorization: Bearer {POLL_TOKEN}}}
                  every: 100ms
                  id: id
            targets:
              sink:
                url: {url}/sink
                secret: {TARGET_SECRET}
                headers: {{X-Api-Key: {TARGET_KEY}}}
                timeout: 1s
                retry: [100ms, 100ms, 100ms]
            """,
            "--log-level",
            "debug",
        )
        body = b'{"type": "order.created"}'
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            # Signed with a secret the source does not have, signed right but stale, unsigned.
            for headers in (
                signed_headers(OTHER_SECRET, "m1", body),
                signed_headers(INBOUND_SECRET, "m2", body, at_s=time.time() - 3600),
                {"webhook-id": "m3", "webhook-timestamp": str(int(time.time()))},
            ):
                assert (
                    client.post("/hooks/orders", content=body, headers=headers).status_code == 401
                )
            wrong = "sha256=" + hmac.new(b"wrong", body, hashlib.sha256).hexdigest()
            r = client.post("/hooks/gh", content=body, headers={"x-hub-signature-256": wrong})
            assert r.status_code == 401
            # Accepted, then delivered to a target that fails in every way and echoes.
            r = client.post(
                "/hooks/orders", content=body, headers=signed_headers(INBOUND_SECRET, "m4", body)
            )
            assert r.status_code == 202
            assert client.get("/", headers={"Authorization": "Bearer nope"}).status_code == 401
            # What the admin and the scraper see holds no secret either.
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            shown = [client.get(p, headers=admin).text for p in ("/", "/api/status", "/metrics")]
            (tmp_path / "pages.log").write_text("\n".join(shown))
        db = tmp_path / "bridge.db"
        wait_until(lambda: query(db, "SELECT status FROM deliveries") == [("dead",)], timeout_s=20)
        wait_until(lambda: query(db, "SELECT failures FROM poll_state WHERE failures >= 4"))
        outputs = [
            run_cli(*args, "-c", str(proc.config_path))
            for args in (("check",), ("deliveries", "--json"), ("targets",), ("events", "--json"))
        ]
        assert proc.terminate() == 0
    log = proc.log()
    assert "refused a webhook" in log and "poll failed" in log, "the faults were logged"
    (tmp_path / "cli.log").write_text("\n".join(o.stdout + o.stderr for o in outputs))
    assert leaked_secrets(tmp_path, extra=ALL) == []


STANDARD = f"""
database: bridge.db
sources:
  orders:
    webhook:
      verify: standard-webhooks
      secrets: [{INBOUND_SECRET}]
      tolerance: 60s
"""


# Seconds from now, and the answer: the tolerance is 60 s, and nothing lands near its edge.
OFFSETS = [(-86400, 401), (-120, 401), (-66, 401), (-30, 202), (0, 202), (30, 202), (66, 401),
           (3600, 401), (10**10, 401)]  # fmt: skip


def test_timestamps_outside_the_tolerance_are_refused(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    proc = daemon(STANDARD)
    body = b'{"type": "order.created"}'
    for i, (offset_s, status) in enumerate(OFFSETS):
        headers = signed_headers(INBOUND_SECRET, f"m{i}", body, at_s=time.time() + offset_s)
        r = httpx.post(proc.url + "/hooks/orders", content=body, headers=headers)
        assert r.status_code == status, offset_s
    stored = {row[0] for row in query(tmp_path / "bridge.db", SENT)}
    assert stored == {f"m{i}" for i, (_, status) in enumerate(OFFSETS) if status == 202}
    assert proc.terminate() == 0
    assert proc.log().count("refused a webhook") == sum(s == 401 for _, s in OFFSETS)


ADMIN_ROUTES = ["/", "/api/status"]


def test_admin_routes_refuse_without_the_token(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    proc = daemon(
        f"""
        server:
          listen: 127.0.0.1:{{port}}
          admin_token: {ADMIN_TOKEN}
        {STANDARD.strip()}
        """.replace("\n        ", "\n")
    )
    with httpx.Client(base_url=proc.url, timeout=10) as client:
        for path in ADMIN_ROUTES:
            for headers in (
                {},
                {"Authorization": "Bearer wrong-token"},
                {"Authorization": f"Basic {ADMIN_TOKEN}"},
                {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
                {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
            ):
                r = client.get(path, headers=headers)
                assert r.status_code == 401, (path, headers)
                assert ADMIN_TOKEN not in r.text
            r = client.get(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            assert r.status_code == 200, path
            assert ADMIN_TOKEN not in r.text and INBOUND_SECRET not in r.text
        # The routes for machines and providers stay open.
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200, path
        body = b'{"type": "order.created"}'
        headers = signed_headers(INBOUND_SECRET, "m1", body)
        assert client.post("/hooks/orders", content=body, headers=headers).status_code == 202
    assert proc.terminate() == 0


def test_no_redirect_is_built_from_the_host_header_and_unknown_paths_are_404(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    proc = daemon(
        f"""
        server:
          listen: 127.0.0.1:{{port}}
          admin_token: {ADMIN_TOKEN}
        {STANDARD.strip()}
        """.replace("\n        ", "\n")
    )
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=proc.url, timeout=10, follow_redirects=False) as client:
        for path in ("/api/status/", "/healthz/", "/readyz/", "/metrics/", "/hooks/orders/",
                     "/nope", "/api/status/x"):  # fmt: skip
            for headers in ({"Host": "evil.example"}, {"Host": "evil.example", **admin}):
                r = client.get(path, headers=headers)
                assert r.status_code == 404, (path, r.status_code, r.headers)
                assert "location" not in r.headers, path
                assert "evil.example" not in r.text
                assert r.headers["x-content-type-options"] == "nosniff"
                assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
            r = client.post(path, content=b"{}", headers={"Host": "evil.example"})
            assert r.status_code == 404 and "location" not in r.headers, path
        # The real paths still answer.
        assert client.get("/api/status", headers=admin).status_code == 200
        assert client.get("/healthz").status_code == 200
    assert proc.terminate() == 0


@pytest.fixture
def hosts_file(tmp_path: Path) -> Callable[[str], tuple[str, ...]]:
    """A command prefix that runs the daemon with its own /etc/hosts (a private mount
    namespace, as root); skips when this machine cannot do that."""

    def prefix(lines: str) -> tuple[str, ...]:
        hosts = tmp_path / "hosts"
        hosts.write_text(lines)
        unshare = shutil.which("unshare")
        if unshare is None:
            pytest.skip("unshare is not installed: no private /etc/hosts for the daemon")
        wrapper = ("sh", "-c", f'mount --bind "{hosts}" /etc/hosts && exec "$@"', "sh")
        probe = subprocess.run(
            [unshare, "--mount", *wrapper, "getent", "hosts", lines.split()[1]],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0:
            pytest.skip(f"no private /etc/hosts here (needs root): {probe.stderr.strip()}")
        return (unshare, "--mount", *wrapper)

    return prefix


def test_a_listen_name_that_looks_like_loopback_but_binds_elsewhere_needs_the_token(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], hosts_file: Callable[..., tuple]
) -> None:
    # The name starts with "127." but resolves to the wildcard address: every interface.
    prefix = hosts_file("0.0.0.0 127.0.0.1.evil.example\n")
    proc = daemon(
        f"""
        server:
          listen: 127.0.0.1.evil.example:{{port}}
        {STANDARD.strip()}
        """.replace("\n        ", "\n"),
        prefix=prefix,
    )
    # Reached here on 127.0.0.1, which the wildcard includes.
    for path in ADMIN_ROUTES:
        r = httpx.get(proc.url + path, timeout=10)
        assert r.status_code == 403, (path, r.status_code)
        assert "admin_token" in r.text
    assert httpx.get(proc.url + "/healthz").status_code == 200
    assert proc.terminate() == 0
    assert "listening on 0.0.0.0:" in proc.log()


def test_a_listen_name_that_binds_a_loopback_address_serves_the_page(
    tmp_path: Path, daemon: Callable[..., DaemonProcess], hosts_file: Callable[..., tuple]
) -> None:
    prefix = hosts_file("127.0.0.1 status.internal.example\n")
    proc = daemon(
        f"""
        server:
          listen: status.internal.example:{{port}}
        {STANDARD.strip()}
        """.replace("\n        ", "\n"),
        prefix=prefix,
    )
    for path in ADMIN_ROUTES:
        assert httpx.get(proc.url + path, timeout=10).status_code == 200, path
        # Asked by the name it listens on (as `bridge status` does): its own name.
        own = {"Host": f"status.internal.example:{proc.port}"}
        assert httpx.get(proc.url + path, headers=own, timeout=10).status_code == 200, path
    assert proc.terminate() == 0

"""`bridge send` against a running daemon, one test per scheme; and on the real daemon,
`allow_from` with `server.trusted_proxies`: a spoofed X-Forwarded-For from an untrusted
address is ignored, a trusted proxy's is followed."""

from __future__ import annotations

import json
import re
import sqlite3
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import DaemonProcess, free_port, run_cli, start_daemon, wait_until
from tests.receive.inbound import CASES, SCHEMES, SECRETS, SOURCES, V1A_SIGNING_KEY

EVENT_LINE = re.compile(r"^(202 new event|200 duplicate of) (evt_\S+)$")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon with a source of every scheme, for the whole module."""
    folder = tmp_path_factory.mktemp("send")
    port = free_port()
    path = folder / "config.yaml"
    path.write_text(
        f"database: send.db\nserver:\n  listen: 127.0.0.1:{port}\n" + textwrap.dedent(SOURCES)
    )
    proc = start_daemon(path, port)
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.kill()


def stored(proc: DaemonProcess, event_id: str) -> tuple[str, str, Any] | None:
    """The source, type and data of a stored event, read from the daemon's database."""
    db = proc.config_path.parent / "send.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        row = connection.execute(
            "SELECT source, type, data FROM events WHERE id = ?", (event_id,)
        ).fetchone()
    return None if row is None else (row[0], row[1], json.loads(row[2]))


def send(proc: DaemonProcess, *args: str, env: dict[str, str] | None = None) -> Any:
    return run_cli("send", "-c", str(proc.config_path), *args, env=env)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_bridge_send_signs_as_the_provider_and_the_running_bridge_stores_it(
    running: DaemonProcess, scheme: str, tmp_path: Path
) -> None:
    env = {"BRIDGE_SIGNING_KEY": V1A_SIGNING_KEY} if scheme == "v1a" else None
    done = send(running, scheme, env=env)
    assert done.returncode == 0, done.stderr
    match = EVENT_LINE.match(done.stdout.strip())
    assert match and match.group(1) == "202 new event", done.stdout
    event_id = match.group(2)
    found = wait_until(lambda: stored(running, event_id), timeout_s=10)
    assert found[0] == scheme
    # The body of a file, sent twice: the second is a duplicate.
    body, _headers = CASES[scheme].request(scheme, f"file-{scheme}")
    path = tmp_path / "body.json"
    path.write_bytes(body)
    args = [scheme, "--file", str(path)]
    if scheme in ("github", "shopify"):
        args += ["--type", CASES[scheme].type.split(".")[0]]
    first = send(running, *args, env=env)
    assert first.returncode == 0, first.stderr
    first_id = EVENT_LINE.match(first.stdout.strip())
    assert first_id, first.stdout
    assert stored(running, first_id.group(2))[2] == json.loads(body)  # type: ignore[index]
    if scheme in ("github", "shopify", "gitlab", "sw", "v1a"):
        return  # a fresh delivery id each time: a new event, as a redelivery would not be
    again = send(running, *args, env=env)
    assert again.stdout.strip() == f"200 duplicate of {first_id.group(2)}"


def test_bridge_send_says_why_it_cannot_and_exits_non_zero(
    running: DaemonProcess, tmp_path: Path
) -> None:
    no_key = send(running, "v1a", env={"BRIDGE_SIGNING_KEY": ""})
    assert no_key.returncode == 1 and "whsk_ signing key" in no_key.stderr
    refused = send(running, "bearer", "--url", running.url + "/hooks/basic")
    assert refused.returncode == 1 and refused.stdout.strip().startswith("401 refused")
    unknown = send(running, "nope")
    assert unknown.returncode == 1 and "no webhook source 'nope'" in unknown.stderr
    closed = send(running, "token", "--url", f"http://127.0.0.1:{free_port()}/hooks/token")
    assert closed.returncode == 1 and "cannot post to" in closed.stderr
    assert SECRETS["token"] not in closed.stderr + refused.stdout


# -- allow_from and trusted proxies on the real daemon ---------------------------------------

GUARDED = """
server:
  listen: 127.0.0.1:{port}
  trusted_proxies: [%s]
database: d.db
sources:
  guarded:
    webhook:
      verify: token
      secrets: guard-token
      allow_from: [192.0.2.0/24]
"""


def _post(proc: DaemonProcess, uid: str, **headers: str) -> httpx.Response:
    sent = {
        "x-webhook-token": "guard-token",
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    body = json.dumps({"id": uid, "type": "thing.made"})
    return httpx.post(proc.url + "/hooks/guarded", content=body, headers=sent)


def _count(proc: DaemonProcess) -> int:
    db = proc.config_path.parent / "d.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return int(connection.execute("SELECT count(*) FROM events").fetchone()[0])


def test_a_spoofed_forwarded_for_from_an_untrusted_address_is_ignored(
    daemon: Callable[..., DaemonProcess],
) -> None:
    proc = daemon(GUARDED % "10.9.9.0/24")
    for headers in ({}, {"x_forwarded_for": "192.0.2.7"}, {"forwarded": "for=192.0.2.7"}):
        r = _post(proc, "spoof", **headers)
        assert r.status_code == 403, headers
    assert _count(proc) == 0
    log = wait_until(lambda: "outside allow_from" in proc.log() and proc.log())
    assert "source guarded: refused a webhook: 127.0.0.1 is outside allow_from (403" in log
    assert "guard-token" not in log


def test_a_trusted_proxy_names_the_client_that_allow_from_checks(
    daemon: Callable[..., DaemonProcess],
) -> None:
    proc = daemon(GUARDED % "127.0.0.1/32")
    assert _post(proc, "a", x_forwarded_for="192.0.2.7").status_code == 202
    assert _post(proc, "b", forwarded='for="192.0.2.8:5000";proto=https').status_code == 202
    # The proxy appends what it saw: a client's own entries on the left change nothing.
    assert _post(proc, "c", x_forwarded_for="192.0.2.1, 198.51.100.1").status_code == 403
    assert _post(proc, "d", x_forwarded_for="198.51.100.1, 192.0.2.9").status_code == 202
    assert _post(proc, "e").status_code == 403  # the proxy itself is not allowed
    assert _count(proc) == 3

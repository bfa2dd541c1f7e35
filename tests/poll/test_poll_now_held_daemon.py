"""`bridge poll SOURCE` and `POST /api/poll/SOURCE` on the real daemon while the upstream has
asked it to wait (`429` with `Retry-After: 3600`): no request is sent upstream, and the
answer says until when."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest

from tests.helpers import DaemonProcess, run_cli, wait_until
from tests.scripted_server import Reply, Script

pytestmark = pytest.mark.slow

CONFIG = """
database: bridge.db
sources:
  s:
    poll: {url: "{url}/items", every: 1s, id: id}
"""
HELD = re.compile(
    r"held back by the upstream until (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d \(Retry-After\)"
)


def holds(proc: DaemonProcess) -> list[dict[str, str]]:
    try:
        answer = httpx.get(proc.url + "/api/status", timeout=5)
    except httpx.HTTPError:
        return []
    return answer.json().get("holds", []) if answer.status_code == 200 else []


def test_a_poll_asked_for_while_the_upstream_says_wait_is_not_sent(
    daemon: Callable[..., DaemonProcess], server: tuple[Script, str]
) -> None:
    script, url = server
    script.route("/items", Reply(429, {}, headers=[("Retry-After", "3600")]))
    proc = daemon(CONFIG.replace("{url}", url))
    (hold,) = wait_until(lambda: holds(proc), timeout_s=20)
    assert hold["source"] == "s" and hold["why"] == "Retry-After"
    assert len(script.seen) == 1  # the first scheduled poll, answered 429

    for _ in range(4):  # the CLI: exit 1, and until when
        asked = run_cli("poll", "-c", str(proc.config_path), "s")
        assert asked.returncode == 1, asked.stderr
        assert asked.stdout.startswith("s: not polled: ")
        assert HELD.search(asked.stdout), asked.stdout
        assert "Traceback" not in asked.stderr
    for _ in range(16):  # scripts: 429 with Retry-After and the same message
        answer = httpx.post(proc.url + "/api/poll/s", timeout=10)
        assert answer.status_code == 429
        assert 3500 <= int(answer.headers["retry-after"]) <= 3600
        body = answer.json()
        assert body["polled"] is False and body["ok"] is False
        assert HELD.fullmatch(body["error"]) and body["held_until"].endswith("Z")
    assert len(script.seen) == 1  # 20 calls, no request upstream

    shown = run_cli("status", "-c", str(proc.config_path))
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"s: held back by the upstream until \S+Z \(Retry-After\)", shown.stdout)
    assert "Traceback" not in proc.log()

"""docs/api.md's worked scripts run as written (curl and jq) against the real daemon: its
address and the target's name are the only words changed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from bridge.web.views import cursor_of
from tests.api.parts import Bridge, running, wait_for_attempts
from tests.helpers import REPO, wait_until
from tests.web.admin_parts import TOKEN

pytestmark = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("jq")), reason="curl or jq is not installed"
)
PAGE = REPO / "docs" / "api.md"


def blocks(bridge: Bridge) -> list[str]:
    """The page's sh blocks, pointed at this bridge and its target `sink`."""
    found = re.findall(r"```sh\n(.*?)```", PAGE.read_text(), re.S)
    assert len(found) == 5, "setup, redeliver, disable, enable, stream"
    return [
        textwrap.dedent(b)
        .replace("http://127.0.0.1:8080", bridge.proc.url)
        .replace("orders-api", "sink")
        for b in found
    ]


def bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BRIDGE_ADMIN_TOKEN": TOKEN}
    return subprocess.run(["bash", "-euc", script], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=60)  # fmt: skip


def test_the_redelivery_and_the_pause_scripts_run_as_written(daemon, tmp_path: Path) -> None:
    with running(daemon) as bridge:
        setup, redeliver, disable, enable, _ = blocks(bridge)
        bridge.send("d1")
        bridge.send("d2")
        wait_for_attempts(bridge, 6)
        wait_until(lambda: len(bridge.api.get("/events", params={"delivery": "dead"}).json()[
            "events"]) == 2)  # fmt: skip
        bridge.receiver.fixed = True
        done = bash(setup + redeliver, tmp_path)
        assert done.returncode == 0, done.stderr
        assert "2 dead events: queued 2 deliveries again" in done.stdout
        assert done.stdout.count(" dead order.created ") == 2
        wait_until(lambda: len(bridge.api.get("/events", params={"delivery": "delivered"}).json()[
            "events"]) == 2)  # fmt: skip
        # Pause: the target's deliveries wait; resume: they go.
        paused = bash(setup + disable, tmp_path)
        assert paused.returncode == 0, paused.stderr
        first, second = paused.stdout.splitlines()
        assert json.loads(first) == {"target": "sink", "enabled": False, "changed": True}
        assert json.loads(second)["enabled"] is False
        # The running deliverer takes it within a second (it reads the targets' states).
        wait_until(lambda: "target sink disabled: disabled through the API" in bridge.proc.log())
        received = bridge.receiver.received
        bridge.send("d3")
        wait_until(lambda: bridge.api.get("/targets/sink").json()["backlog"] == 1)
        assert bridge.receiver.received == received
        resumed = bash(setup + enable, tmp_path)
        assert json.loads(resumed.stdout)["changed"] is True
        wait_until(lambda: bridge.receiver.received == received + 1)


def _follow(script: str, cwd: Path, out: Path) -> subprocess.Popen[str]:
    """The script running, what it prints going to `out` (read while it runs)."""
    env = {**os.environ, "BRIDGE_ADMIN_TOKEN": TOKEN}
    with out.open("w") as stdout:
        return subprocess.Popen(["bash", "-uc", script], stdout=stdout, text=True, env=env,
                                cwd=cwd, start_new_session=True)  # fmt: skip


def _stop(proc: subprocess.Popen[str], out: Path) -> str:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)
    return out.read_text()


def _shown(out: Path) -> list[dict]:
    """The events the script has printed so far (a line being written is left out)."""
    lines = out.read_text().split("\n")[:-1] if out.exists() else []
    return [json.loads(line) for line in lines if line]


def test_the_stream_script_follows_and_resumes_after_the_last_id(daemon, tmp_path: Path) -> None:
    with running(daemon) as bridge:
        setup, *_, follow = blocks(bridge)
        first_out, last_id = tmp_path / "first.out", tmp_path / "last-event-id"
        proc = _follow(setup + follow, tmp_path, first_out)

        def shows(subject: str, out: Path) -> bool:
            return any(s.get("subject") == subject for s in _shown(out))

        try:
            # The loop connects when it connects: send until an event sent is shown.
            for i in range(20):
                bridge.send(f"live{i}")
                deadline = time.monotonic() + 3
                while not shows(f"live{i}", first_out) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if shows(f"live{i}", first_out):
                    break
            assert shows(f"live{i}", first_out)

            def kept_last() -> bool:  # the id file names the last event printed
                text = last_id.read_text() if last_id.exists() else ""
                return bool(text) and cursor_of(text).id == _shown(first_out)[-1]["id"]

            wait_until(kept_last)
        finally:
            out = _stop(proc, first_out)
        # The bridge's own events (`sink` failing: bridge.delivery.*) are in the stream too.
        shown = [s for line in out.splitlines() if (s := json.loads(line))["source"] != "bridge"]
        assert shown and all(s["source"] == "orders" for s in shown)
        # Sent while it is down, shown first when it starts again (after the last id).
        bridge.send("while-down")
        again_out = tmp_path / "again.out"
        again = _follow(setup + follow, tmp_path, again_out)
        try:
            wait_until(lambda: shows("while-down", again_out))
        finally:
            out = _stop(again, again_out)
        later = [s["subject"] for line in out.splitlines()
                 if (s := json.loads(line))["source"] != "bridge"]  # fmt: skip
        # Both runs together: every event from the first shown on, in order, none twice (the
        # first run may have been stopped before it showed the last ones it was sent).
        together = [s["subject"] for s in shown] + later
        mine = bridge.api.get("/events", params={"source": "orders"}).json()["events"]
        stored = [e["subject"] for e in reversed(mine)]
        assert together == stored[-len(together) :] and together[-1] == "while-down", together

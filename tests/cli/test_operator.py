"""The operator's day on the real CLI and the real daemon: `bridge init`, a webhook, `bridge
event show`, `bridge poll` through the daemon, `events --since/--type/--follow`,
`redeliver --since`, `target disable`, and a broken config read with `--database`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.config import ServerConfig
from bridge.daemon.reload import same_address
from tests.helpers import github_headers, run_cli, serve_app, wait_until

GITHUB_SECRET = "a-secret-for-the-tests"


class Upstream:
    """The polled API (`/tickets`) and the target (`/events`, answering 204)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tickets = [{"id": 1, "title": "first"}]
        self.received: list[dict] = []

    def app(self) -> Starlette:
        async def tickets(request: Request) -> Response:
            with self.lock:
                return JSONResponse(list(self.tickets))

        async def events(request: Request) -> Response:
            body = await request.json()
            with self.lock:
                self.received.append(body)
            return Response(status_code=204)

        return Starlette(
            routes=[Route("/tickets", tickets), Route("/events", events, methods=["POST"])]
        )


def push_github(base: str, action: str = "opened") -> str:
    """A signed GitHub `issues` webhook, as GitHub sends it; returns the event id."""
    body = json.dumps({"action": action, "issue": {"number": 7}}).encode()
    answer = httpx.post(
        base + "/hooks/github", content=body, headers=github_headers(GITHUB_SECRET, body)
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def cli_json(*args: str) -> object:
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def start_from_init(tmp_path: Path, daemon, url: str):
    """`bridge init`, the listen address made a free port, run with the environment set."""
    done = run_cli("init", str(tmp_path / "site"))
    assert done.returncode == 0 and "wrote" in done.stdout, done.stderr
    path = tmp_path / "site" / "config.yaml"
    text = path.read_text()
    env = {
        "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
        "TICKETS_URL": url + "/tickets",
        "TARGET_URL": url + "/events",
    }
    proc = daemon(text.replace("127.0.0.1:8080", "127.0.0.1:{port}"), env=env)
    return proc, env


def test_init_writes_a_commented_config_that_check_accepts(tmp_path: Path) -> None:
    done = run_cli("init", str(tmp_path))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "config.yaml").read_text()
    assert text.count("#") > 20 and "${GITHUB_WEBHOOK_SECRET:-" in text
    assert "${TARGET_SECRET:-whsec_" in text and "${TICKETS_URL:-" in text
    checked = run_cli("check", "-c", str(tmp_path / "config.yaml"))
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    assert "source    github: webhook /hooks/github verify github" in checked.stdout
    again = run_cli("init", str(tmp_path))
    assert again.returncode == 2 and "exists already" in again.stderr
    forced = cli_json("init", str(tmp_path), "--force", "--json")
    assert forced == {"config": str(tmp_path / "config.yaml"), "written": True}


@pytest.mark.timeout(300)  # about 25 commands, each a new process importing the bridge
def test_a_day_with_the_starter_config(tmp_path: Path, daemon) -> None:
    up = Upstream()
    with serve_app(up.app()) as url:
        proc, env = start_from_init(tmp_path, daemon, url)
        c = ("-c", str(proc.config_path))

        # The daemon's first poll is the silent baseline (waited for, so that the next
        # `bridge poll` is not a hint queued behind it); `bridge poll` polls now.
        def baseline_done() -> bool:
            summary = cli_json("status", *c, "--json")
            return any(
                src["name"] == "tickets" and src.get("last_poll_ms")
                for src in summary["sources"]  # type: ignore[index]
            )

        wait_until(baseline_done, timeout_s=20)
        first = run_cli("poll", "tickets", *c, env=env)
        assert first.returncode == 0, first.stderr
        assert "tickets: polled at 20" in first.stdout and "HTTP 200" in first.stdout
        with up.lock:
            up.tickets.append({"id": 2, "title": "second"})
        # A browser's request (it carries an Origin) may not poll: pages have their button.
        browser = httpx.post(proc.url + "/api/poll/tickets", headers={"origin": proc.url})
        assert browser.status_code == 403
        assert httpx.post(proc.url + "/api/poll/nope").status_code == 404
        polled = cli_json("poll", "tickets", *c, "--json")
        assert polled["ok"] is True and polled["events"] == 1 and polled["status"] == 200

        event_id = push_github(proc.url)
        wait_until(lambda: len(up.received) == 2, timeout_s=20)

        def shown() -> dict:
            out = cli_json("event", "show", event_id, *c, "--json")
            (delivery,) = out["deliveries"]
            return out if delivery["status"] == "delivered" and delivery["history"] else {}

        out = wait_until(shown, timeout_s=20)
        assert out["event"]["type"] == "issues.opened" and out["event"]["source"] == "github"
        (delivery,) = out["deliveries"]
        (attempt,) = delivery["history"]
        assert delivery["target"] == "app" and attempt["status"] == 204
        assert attempt["time"].endswith("Z") and isinstance(attempt["duration_ms"], int)
        text = run_cli("event", "show", event_id, *c)
        assert text.returncode == 0 and "issues.opened" in text.stdout and "204" in text.stdout

        # Usage mistakes exit 2.
        for args in (("events", "--source", "nope"), ("event", "show", "evt_nope"),
                     ("redeliver", "evt_nope"), ("target", "disable", "nope"),
                     ("poll", "nope")):  # fmt: skip
            done = run_cli(*args, *c)
            assert done.returncode == 2, (args, done.stdout, done.stderr)

        # --type is a glob, --since a duration; times are ISO 8601.
        issues = cli_json("events", "--type", "issues.*", "--since", "1h", *c, "--json")
        assert [e["id"] for e in issues] == [event_id]
        tickets = cli_json("events", "--type", "tickets.created", *c, "--json")
        assert [e["subject"] for e in tickets] == ["2"]
        listed = run_cli("events", "--type", "*.opened", *c)
        assert event_id in listed.stdout and "tickets" not in listed.stdout

        # Replay by time range: a dry run counts, the real one queues.
        dry = run_cli("redeliver", "--since", "1h", "--type", "issues.*", "--dry-run", *c)
        assert dry.returncode == 0 and "would queue 1 event again" in dry.stdout
        queued = cli_json("redeliver", "--since", "1h", "--source", "github", *c, "--json")
        assert queued == {"events": 1, "queued": 1, "circuit": []}
        wait_until(lambda: len(up.received) == 3, timeout_s=20)

        # A disabled target gets nothing until enabled again.
        off = cli_json("target", "disable", "app", *c, "--json")
        assert off == {"target": "app", "enabled": False, "changed": True}
        assert cli_json("targets", *c, "--json")[0]["enabled"] is False

        status = cli_json("status", *c, "--json")
        (source,) = [s for s in status["sources"] if s["name"] == "tickets"]
        assert source["last_poll"].endswith("Z") and isinstance(source["last_poll_ms"], int)
        assert status["reload_error"] is None
        on = run_cli("target", "enable", "app", *c)
        assert on.returncode == 0 and "target app enabled" in on.stdout
        assert proc.terminate() == 0


def test_poll_without_a_daemon_says_so(tmp_path: Path) -> None:
    run_cli("init", str(tmp_path))
    path = tmp_path / "config.yaml"
    path.write_text(path.read_text().replace("127.0.0.1:8080", "127.0.0.1:9"))
    done = run_cli("poll", "tickets", "-c", str(path))
    assert done.returncode == 1 and "no running bridge answered" in done.stderr


def test_events_follow_prints_new_events_as_they_are_recorded(tmp_path: Path, daemon) -> None:
    up = Upstream()
    with serve_app(up.app()) as url:
        proc, env = start_from_init(tmp_path, daemon, url)
        first = push_github(proc.url)
        command = [sys.executable, "-m", "bridge", "events", "--follow", "--json"]
        lines: list[str] = []
        with subprocess.Popen(
            [*command, "-c", str(proc.config_path)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        ) as follow:
            assert follow.stdout is not None
            out = follow.stdout
            reader = threading.Thread(target=lambda: lines.extend(iter(out.readline, "")))
            reader.start()
            try:
                wait_until(lambda: len(lines) >= 1, timeout_s=20)
                # The quickstart's way: `bridge send` signs with the starter config's secret.
                sent = run_cli("send", "github", "--type", "issues.closed",
                               "-c", str(proc.config_path), env=env)  # fmt: skip
                assert sent.returncode == 0 and "202 new event" in sent.stdout, sent.stderr
                second = sent.stdout.split()[-1]
                wait_until(lambda: len(lines) >= 2, timeout_s=20)
            finally:
                follow.send_signal(signal.SIGINT)
                assert follow.wait(timeout=10) == 0
                reader.join(timeout=10)
        assert [json.loads(line)["id"] for line in lines] == [first, second]
        assert proc.terminate() == 0


def test_a_broken_config_shows_as_a_refused_reload_and_the_database_stays_readable(
    tmp_path: Path, daemon
) -> None:
    up = Upstream()
    with serve_app(up.app()) as url:
        proc, env = start_from_init(tmp_path, daemon, url)
        event_id = push_github(proc.url)
        good = proc.config_path.read_text()
        db = str(proc.config_path.parent / "bridge.db")
        c = ("-c", str(proc.config_path))

        # Listen changed: told it waits for a restart; set back to the address bound: not.
        proc.config_path.write_text(good.replace(f":{proc.port}", ":1"))
        proc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "server.listen changed" in proc.log(), timeout_s=15)
        proc.config_path.write_text(good)
        count = proc.log().count("reloaded")
        proc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: proc.log().count("reloaded") > count, timeout_s=15)
        assert proc.log().count("server.listen changed") == 1

        proc.config_path.write_text(good.replace("every: 1m", "evry: 1m"))
        proc.proc.send_signal(signal.SIGHUP)

        def refused() -> str | None:
            return httpx.get(proc.url + "/api/status").json().get("reload_error")

        reason = wait_until(refused, timeout_s=15)
        assert 'did you mean "every"?' in reason
        status = run_cli("status", *c, "--database", db, "--json", env=env)
        assert status.returncode == 0, status.stderr
        # The broken file still names the daemon's server: it is asked, its refusal shown.
        assert json.loads(status.stdout)["reload_error"] == reason
        assert "config not used" in status.stderr

        # Without --database a broken config is a usage mistake; with it, the database reads.
        assert run_cli("events", *c).returncode == 2
        for args in (("events",), ("deliveries",), ("status",), ("latency",),
                     ("event", "show", event_id)):  # fmt: skip
            done = run_cli(*args, *c, "--database", db, "--json")
            assert done.returncode == 0, (args, done.stderr)

        def listed() -> list[dict[str, Any]]:
            return list(json.loads(run_cli("events", *c, "--database", db, "--json").stdout))

        # The refusal is in the stream too, as the bridge's own event.
        wait_until(lambda: len(listed()) > 1, timeout_s=15)
        events = listed()
        assert [e["id"] for e in events if e["source"] != "bridge"] == [event_id]
        assert [e["type"] for e in events if e["source"] == "bridge"] == ["bridge.reload.refused"]

        # The reload applied: the refusal is gone from the status.
        proc.config_path.write_text(good)
        proc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: refused() is None, timeout_s=15)
        shown = json.loads(run_cli("status", *c, "--json", env=env).stdout)
        assert shown["reload_error"] is None
        assert proc.terminate() == 0


def test_same_address_compares_with_what_is_bound() -> None:
    assert same_address(ServerConfig(listen="127.0.0.1:8080"), "127.0.0.1:8080")
    assert same_address(ServerConfig(listen="localhost:8080"), "127.0.0.1:8080")
    assert same_address(ServerConfig(listen="127.0.0.1:0"), "127.0.0.1:41234")
    assert not same_address(ServerConfig(listen="127.0.0.1:8081"), "127.0.0.1:8080")
    assert same_address(ServerConfig(listen="[::1]:8080"), "::1:8080")

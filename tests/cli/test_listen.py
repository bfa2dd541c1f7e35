"""`bridge listen` on the real CLI, as the target of a real daemon: each delivery verified
with the target's own secret or key and printed; a wrong secret is refused with 401."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bridge.deliver.signing import new_keypair, new_secret
from tests.conftest import TEST_SECRET
from tests.helpers import REPO, DaemonProcess, free_port, run_cli, wait_until


@dataclass
class Listening:
    """A running `bridge listen`: its process, and its stdout and stderr as files."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def wait_listening(self) -> None:
        def listening() -> bool:
            assert self.proc.poll() is None, self.err.read_text()
            return "listening on" in self.err.read_text()

        wait_until(listening, timeout_s=20)

    def finished(self) -> str:
        """Its output, once it has stopped by itself (`--count`) with status 0."""
        assert self.proc.wait(timeout=30) == 0, self.err.read_text()
        return self.out.read_text()

    def deliveries(self) -> list[dict]:
        return [json.loads(line) for line in self.finished().splitlines()]


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Callable[..., Listening]]:
    """Start `bridge listen ARGS`, listening; every one left running is killed at the end."""
    started: list[Listening] = []

    def start(*args: str) -> Listening:
        out, err = tmp_path / f"listen-{len(started)}.out", tmp_path / f"listen-{len(started)}.err"
        with open(out, "wb") as out_file, open(err, "wb") as err_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "listen", *args],
                stdout=out_file,
                stderr=err_file,
                cwd=tmp_path,
            )
        listening = Listening(proc, out, err)
        started.append(listening)
        listening.wait_listening()
        return listening

    yield start
    for listening in started:
        if listening.proc.poll() is None:
            listening.proc.kill()
            listening.proc.wait(timeout=10)


def config(target_port: int, secret: str) -> str:
    return f"""
        database: listen.db
        sources:
          hook: {{webhook: {{verify: none, allow_unsigned: true}}}}
        targets:
          app:
            url: http://127.0.0.1:{target_port}/events
            secrets: [{secret}]
            retry: [100ms]
    """


def send(proc: DaemonProcess, n: int) -> list[str]:
    ids = []
    for i in range(n):
        answer = httpx.post(
            f"{proc.url}/hooks/hook", json={"id": f"m{i}", "type": "ping"}, timeout=10
        )
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    return ids


def test_each_delivery_is_verified_with_the_targets_secret(daemon, listener, tmp_path) -> None:
    port = free_port()
    proc = daemon(config(port, TEST_SECRET))
    listening = listener(str(port), "-c", str(proc.config_path), "--json", "--count", "2")
    ids = send(proc, 2)
    seen = listening.deliveries()
    assert sorted(d["id"] for d in seen) == sorted(ids)
    assert all(d["verified"] is True and d["status"] == 204 for d in seen), seen
    assert all(d["type"] == "ping" and d["path"] == "/events" for d in seen), seen


def test_a_whsk_key_is_verified_with_its_public_key(daemon, listener, tmp_path) -> None:
    port = free_port()
    private, _public = new_keypair()
    proc = daemon(config(port, private))
    listening = listener(str(port), "-c", str(proc.config_path), "--json", "--count", "1")
    [event] = send(proc, 1)
    [seen] = listening.deliveries()
    assert seen["id"] == event and seen["verified"] is True


def test_a_wrong_secret_is_refused_and_the_attempt_fails(daemon, listener, tmp_path) -> None:
    port = free_port()
    proc = daemon(config(port, TEST_SECRET))
    listening = listener(str(port), "--secret", new_secret(), "--json", "--count", "1")
    [event] = send(proc, 1)
    [seen] = listening.deliveries()
    assert seen["verified"] is False and seen["status"] == 401
    assert "no webhook-signature matches" in seen["reason"]

    def attempt_recorded() -> str | None:
        shown = run_cli("event", "show", event, "-c", str(proc.config_path))
        return shown.stdout if "401" in shown.stdout else None

    assert wait_until(attempt_recorded, timeout_s=20)


def test_count_shows_that_many_even_when_more_arrive_while_it_stops(listener) -> None:
    """A delivery that arrives while the server stops (a refused one's retry, 100 ms later)
    is answered but not shown: `--count 1` prints one."""
    port = free_port()
    listening = listener(str(port), "--no-verify", "--json", "--count", "1")

    async def several() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:
            answers = await asyncio.gather(
                *(client.post(f"http://127.0.0.1:{port}/events", json={"n": n}) for n in range(4)),
                return_exceptions=True,
            )
        return [a.status_code for a in answers if isinstance(a, httpx.Response)]

    answered = asyncio.run(several())
    assert answered and set(answered) == {204}
    assert len(listening.deliveries()) == 1


def test_the_human_lines_name_the_delivery_and_show_the_body(daemon, listener, tmp_path) -> None:
    port = free_port()
    proc = daemon(config(port, TEST_SECRET))
    listening = listener(str(port), "-c", str(proc.config_path), "--count", "1")
    [event] = send(proc, 1)
    lines = listening.finished().splitlines()
    assert lines[0].endswith(f"POST /events  204  verified  ping  {event}"), lines
    assert f'"id": "{event}"' in "\n".join(lines[1:])


def test_without_a_secret_or_a_target_on_the_port_it_says_what_to_give(tmp_path: Path) -> None:
    done = run_cli("listen", "9", "-c", str(tmp_path / "none.yaml"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "give --secret whsec_" in done.stderr
    (tmp_path / "c.yaml").write_text(config(8, TEST_SECRET))
    done = run_cli("listen", "9", "-c", str(tmp_path / "c.yaml"))
    assert done.returncode == 2 and "no target delivers to port 9" in done.stderr


def test_bridgectl_is_the_same_program_under_a_name_that_does_not_clash() -> None:
    bridgectl = Path(sys.executable).parent / "bridgectl"
    if not bridgectl.exists():
        pytest.skip("bridgectl not installed (make install)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [str(bridgectl), "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0 and done.stdout.startswith("Usage: bridgectl"), done.stdout
    assert "listen" in done.stdout and "run" in done.stdout

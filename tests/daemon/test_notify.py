"""sd_notify: the messages the real daemon sends to a socket the test creates, as systemd would."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.daemon.notify import Notifier, format_message, socket_address, watchdog_interval_s
from tests.conftest import TEST_SECRET
from tests.helpers import DaemonProcess, free_port, wait_until


class Listener:
    """A datagram socket standing in for systemd's notify socket; collects every message."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address
        self.messages: list[dict[str, str]] = []

    def drain(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            lines = data.decode().split("\n")
            self.messages.append(dict(line.split("=", 1) for line in lines))

    def wait_for(self, key: str, after: int = 0, timeout_s: float = 60) -> int:
        """The index of the first message from `after` on that has `key` (a wide bound, as
        for `wait_healthy`: READY comes after the daemon's start-up)."""

        def found() -> int | None:
            for i, msg in enumerate(self.drain()[after:], start=after):
                if key in msg:
                    return i + 1  # +1 so index 0 is truthy for wait_until
            return None

        return int(wait_until(found, timeout_s=timeout_s)) - 1


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    # sun_path holds 107 bytes; fall back to the abstract namespace for deep tmp folders.
    address = str(path) if len(str(path)) < 100 else f"@bridge-test-{os.getpid()}-{id(sock)}"
    sock.bind(str(path) if address.startswith("/") else "\0" + address[1:])
    sock.setblocking(False)
    yield Listener(sock, address)
    sock.close()


@contextlib.contextmanager
def start_notified(
    tmp_path: Path, config_text: str, env: dict[str, str]
) -> Iterator[DaemonProcess]:
    """Start `bridge run` with the given systemd environment (helpers.start_daemon drops it)."""
    port = free_port()
    path = tmp_path / "notified.yaml"
    path.write_text(f"server:\n  listen: 127.0.0.1:{port}\n{config_text}")
    log_path = tmp_path / "notified.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "-c", str(path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            cwd=tmp_path,
        )
    daemon = DaemonProcess(path, port, proc, log_path, env)
    try:
        yield daemon
    finally:
        daemon.kill()


CONFIG = f"""\
database: notify.db
targets:
  a:
    url: http://127.0.0.1:9/a
    secret: {TEST_SECRET}
"""


# -- the pure parts ------------------------------------------------------------------------


def test_socket_address_forms() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@bridge/notify") == b"\0bridge/notify"
    assert socket_address("@") is None
    assert socket_address("vsock:2:1234") is None
    assert socket_address("relative/path") is None


def test_message_format_keeps_status_to_one_line() -> None:
    msg = format_message({"READY": 1, "STATUS": "two\nlines\tand  spaces"})
    assert msg == b"READY=1\nSTATUS=two lines and spaces"


def test_watchdog_interval_is_half_and_only_for_this_process() -> None:
    pid = os.getpid()
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}, pid) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(pid)}, pid) == 0.1
    assert watchdog_interval_s({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}, pid) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}, pid) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}, pid) is None
    assert watchdog_interval_s({}, pid) is None


def test_nothing_is_sent_without_notify_socket() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not notifier.is_enabled
    assert notifier.watchdog_s is None
    assert notifier.ready("up") is False


def test_abstract_namespace_socket_receives(listener: Listener) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"bridge-test-abstract-{os.getpid()}"
    sock.bind("\0" + name)
    sock.settimeout(5)
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
    try:
        assert notifier.ready("all good")
        assert sock.recv(4096) == b"READY=1\nSTATUS=all good"
    finally:
        notifier.close()
        sock.close()


def test_a_missing_socket_is_logged_not_raised(tmp_path: Path, caplog) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})
    assert notifier.status("x") is False
    assert notifier.status("y") is False
    notifier.close()
    assert len([r for r in caplog.records if "cannot notify systemd" in r.message]) == 1


# -- the real daemon -----------------------------------------------------------------------


def test_daemon_notifies_ready_watchdog_reload_and_stopping(
    tmp_path: Path, listener: Listener
) -> None:
    env = {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "200000"}
    with start_notified(tmp_path, CONFIG, env) as proc:
        ready = listener.wait_for("READY")
        # READY=1 means listening: the first request succeeds without a retry.
        assert httpx.get(proc.url + "/readyz", timeout=5).status_code == 200
        status = listener.messages[ready]["STATUS"]
        assert (
            status == f"listening on 127.0.0.1:{proc.port}; 0 sources, 1 target; backlog 0, dead 0"
        )
        assert "\n" not in status

        # The watchdog is pinged from the event loop at half of WATCHDOG_USEC (0.1 s).
        wait_until(lambda: sum("WATCHDOG" in m for m in listener.drain()) >= 3, timeout_s=10)
        assert all(m["WATCHDOG"] == "1" for m in listener.messages if "WATCHDOG" in m)

        before_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        proc.proc.send_signal(signal.SIGHUP)
        reloading = listener.wait_for("RELOADING", after=ready + 1)
        msg = listener.messages[reloading]
        assert msg["RELOADING"] == "1"
        assert re.fullmatch(r"\d+", msg["MONOTONIC_USEC"])
        assert int(msg["MONOTONIC_USEC"]) >= before_ns // 1000
        again = listener.wait_for("READY", after=reloading + 1)
        assert listener.messages[again]["READY"] == "1"
        assert listener.messages[again]["STATUS"] == status

        # A refused reload says so in the status, until a reload is applied; a secret in the
        # wrong place (the target's secret as its URL) is masked there as in the logs.
        good = proc.config_path.read_text()
        url_line = good.splitlines().index("    url: http://127.0.0.1:9/a") + 1
        proc.config_path.write_text(good.replace("http://127.0.0.1:9/a", TEST_SECRET))
        proc.proc.send_signal(signal.SIGHUP)
        refused = listener.wait_for("READY", after=listener.wait_for("RELOADING", after=again + 1))
        assert listener.messages[refused]["STATUS"] == (
            f"{status.split('; backlog')[0]}; last reload refused: "
            f'{proc.config_path}:{url_line}: targets.a.url: "***" is not an http(s) URL'
            "; backlog 0, dead 0"
        )
        proc.config_path.write_text(good)
        proc.proc.send_signal(signal.SIGHUP)
        again = listener.wait_for("READY", after=listener.wait_for("RELOADING", after=refused + 1))
        assert listener.messages[again]["STATUS"] == status

        assert proc.terminate() == 0
        stopping = listener.wait_for("STOPPING", after=again + 1, timeout_s=5)
        assert listener.messages[stopping]["STOPPING"] == "1"
        # Nothing claims readiness after STOPPING.
        assert not any("READY" in m for m in listener.drain()[stopping:])


def test_daemon_without_notify_socket_runs_and_reloads(daemon) -> None:
    proc = daemon(CONFIG)
    proc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reloaded" in proc.log(), timeout_s=10)
    assert proc.terminate() == 0
    assert "bridge.notify" not in proc.log()

"""The real daemon process: start, health, readiness, graceful stop, start-up failures."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import httpx

from tests.helpers import free_port, start_daemon, wait_until


def test_starts_answers_and_exits_0_on_sigterm(daemon) -> None:
    proc = daemon("database: life.db\n", "--allow-empty")
    assert httpx.get(proc.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(proc.url + "/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    started = time.monotonic()
    assert proc.terminate(timeout_s=10) == 0
    assert time.monotonic() - started < 10
    log = proc.log()
    assert "listening on 127.0.0.1" in log and "stopped" in log
    assert "Traceback" not in log
    assert (proc.config_path.parent / "life.db").exists()


def test_sigint_stops_gracefully_too(daemon) -> None:
    proc = daemon("database: int.db\n", "--allow-empty")
    proc.proc.send_signal(signal.SIGINT)
    assert proc.proc.wait(timeout=10) == 0


def test_port_taken_is_one_line_and_nonzero(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        path = tmp_path / "c.yaml"
        path.write_text(f"server:\n  listen: 127.0.0.1:{port}\n")
        proc = start_daemon(path, port, "--allow-empty")
        code = proc.proc.wait(timeout=20)
    assert code == 1
    log = proc.log()
    assert f"bridge: cannot listen on 127.0.0.1:{port}: the address is already in use" in log
    assert "Traceback" not in log


def test_unwritable_database_is_one_line_and_nonzero(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    port = free_port()
    path = tmp_path / "c.yaml"
    path.write_text(f"database: blocker/bridge.db\nserver:\n  listen: 127.0.0.1:{port}\n")
    proc = start_daemon(path, port, "--allow-empty")
    assert proc.proc.wait(timeout=20) == 1
    log = proc.log()
    assert "bridge: cannot open the database" in log
    assert "Traceback" not in log


def test_bad_config_exits_2_without_starting(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "c.yaml"
    path.write_text(f"server:\n  listen: 127.0.0.1:{port}\n  colour: blue\n")
    proc = start_daemon(path, port)
    assert proc.proc.wait(timeout=20) == 2
    assert proc.log().strip() == f"{path}:3: server.colour: is not a known key"


def test_a_second_daemon_on_the_same_database_refuses_to_start(daemon) -> None:
    first = daemon("database: owned.db\n", "--allow-empty")
    second = daemon("database: owned.db\n", "--allow-empty", wait=False)
    assert second.proc.wait(timeout=20) == 1
    db = first.config_path.parent / "owned.db"
    assert second.log().strip() == (
        f"bridge: another bridge is already running on the database {db} (it holds {db}.lock);"
        " one bridge process owns a SQLite database"
    )
    # The first is untouched; once it is gone (even killed), the database can be owned again.
    assert httpx.get(first.url + "/healthz").status_code == 200
    first.kill()
    third = daemon("database: owned.db\n", "--allow-empty")
    assert httpx.get(third.url + "/healthz").status_code == 200
    assert third.terminate() == 0


def test_a_deleted_lock_file_lets_no_second_daemon_in_and_is_taken_again(daemon) -> None:
    first = daemon("database: owned.db\n", "--allow-empty")
    db = first.config_path.parent / "owned.db"
    lock = Path(f"{db}.lock")
    lock.unlink()
    # At once, before the first has noticed: the database file's own lock refuses it.
    second = daemon("database: owned.db\n", "--allow-empty", wait=False)
    assert second.proc.wait(timeout=20) == 1
    assert "another bridge is already running on the database" in second.log()
    # The first takes a new lock file (by inode, as it watches the database file), so a
    # third is refused by that too, and the first keeps serving.
    wait_until(lambda: "was deleted or replaced under the running bridge" in first.log(), 10)
    assert lock.exists()
    other = lock.with_name("other.lock")
    other.write_text("")
    os.replace(other, lock)  # replaced by another file this time
    wait_until(lambda: first.log().count("taken again") == 2, 10)
    third = daemon("database: owned.db\n", "--allow-empty", wait=False)
    assert third.proc.wait(timeout=20) == 1
    assert httpx.get(first.url + "/healthz").status_code == 200
    assert httpx.get(first.url + "/readyz").status_code == 200
    assert first.terminate() == 0

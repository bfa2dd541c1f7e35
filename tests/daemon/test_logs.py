"""The daemon's log, read from the real process: what each request, event, delivery and poll
says, the start-up banner, the access log, and words in the right number."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge import __version__
from bridge.config import parse_config
from bridge.daemon.access import combined_line
from bridge.daemon.banner import banner_lines, base_url
from bridge.logs import JournalFormatter, plural, shown_name, syslog_priority
from tests.conftest import TEST_SECRET
from tests.helpers import free_port, serve_app, wait_until


class Upstream:
    """A target that fails its first request, and a polled API that fails while `down`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits = 0
        self.down = True

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            await request.body()
            with self.lock:
                self.hits += 1
                first = self.hits == 1
            return Response(status_code=500 if first else 204)

        async def items(request: Request) -> Response:
            if self.down:
                return Response("down for maintenance", status_code=503)
            return JSONResponse([{"id": "1"}])

        return Starlette(routes=[Route("/in", hook, methods=["POST"]), Route("/items", items)])


def config_text(url: str) -> str:
    return f"""
        database: logs.db
        server:
          listen: 127.0.0.1:{{port}}
          access_log: true
        sources:
          hook:
            webhook: {{verify: none, allow_unsigned: true}}
          signed:
            webhook: {{verify: standard-webhooks, secrets: [{TEST_SECRET}]}}
          api:
            poll: {{url: "{url}/items", every: 100ms, id: id}}
        targets:
          t:
            url: {url}/in
            secret: {TEST_SECRET}
            events: ["hook*"]
            retry: [50ms, 50ms]
          gone:
            url: http://127.0.0.1:9/nothing
            secret: {TEST_SECRET}
            events: ["hook*"]
            retry: []
    """


def test_the_log_tells_what_happened_to_each_request_event_delivery_and_poll(daemon) -> None:
    up = Upstream()
    with serve_app(up.app()) as url:
        proc = daemon(config_text(url), "--log-level", "debug")
        base = proc.url
        event_id = httpx.post(base + "/hooks/hook", json={"id": "e1", "type": "hook.ping"}).json()
        assert httpx.post(base + "/hooks/signed", json={}).status_code == 401
        assert httpx.get(base + "/hooks/hook").status_code == 405
        wait_until(lambda: "api: poll failed" in proc.log(), timeout_s=15)
        up.down = False
        eid = event_id["id"]
        wanted = [
            f"delivery of {eid} from hook to t failed: status 500",
            f"delivery of {eid} from hook to t delivered: status 204",
            f"delivery of {eid} from hook to gone is dead after 1 attempt",
            "api: polling recovered after",
            '"GET /hooks/hook HTTP/1.1" 405',
        ]
        wait_until(lambda: all(w in proc.log() for w in wanted), timeout_s=20)
        assert proc.terminate() == 0
    log = proc.log()
    lines = log.splitlines()

    def line_with(text: str) -> str:
        (found,) = [line for line in lines if text in line][:1]
        return found

    # The banner: version, address, counts in the right number, and every URL.
    assert f"bridge {__version__} listening on 127.0.0.1:{proc.port}: 3 sources, 2 targets" in log
    assert f"status page  {base}/" in log
    assert f"webhook      {base}/hooks/hook (source hook)" in log
    assert f"webhook      {base}/hooks/signed (source signed)" in log
    assert f"metrics      {base}/metrics" in log
    # Refusals at info, with source, status and reason.
    assert re.search(
        r"INFO +bridge\.receive: source signed: refused a webhook: .*\(401 signature\)", log
    )
    assert "source hook: refused a webhook: use POST (405 method)" in log
    # The accepted event at debug; the failed attempt at info; the delivery at debug.
    assert f"source hook: accepted event {eid} (hook.ping)" in line_with("accepted event")
    assert " INFO " in line_with("to t failed: status 500")
    delivered = line_with("to t delivered")
    assert " DEBUG " in delivered and re.search(r"status 204 in \d+ ms, attempt 2", delivered)
    assert " WARNING " in line_with("is dead after 1 attempt (last:")
    # The poll's fault and its recovery.
    assert "api: poll failed, state kept: " in log and "503" in line_with("api: poll failed")
    assert " INFO " in line_with("api: polling recovered after")
    # The access log, in the combined format, under bridge.http.access.
    access = line_with('"POST /hooks/hook HTTP/1.1" 202')
    assert re.search(r"bridge\.http\.access: 127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:", access)
    assert access.endswith('"python-httpx/' + httpx.__version__ + '"')
    # uvicorn speaks as bridge.http; asyncio's debug lines stay out; no doubled words.
    assert "uvicorn" not in log and "asyncio" not in log
    assert "retention: retention" not in log and "1 targets" not in log
    assert "Traceback" not in log


def test_without_access_log_no_request_lines(daemon) -> None:
    proc = daemon("database: quiet.db\n", "--allow-empty")
    assert httpx.get(proc.url + "/healthz").status_code == 200
    assert proc.terminate() == 0
    assert "bridge.http.access" not in proc.log()
    assert "0 sources, 0 targets" in proc.log()


def test_plural_and_names() -> None:
    assert plural(1, "target") == "1 target" and plural(0, "source") == "0 sources"
    assert plural(2, "delivery") == "2 deliveries" and plural(1, "delivery") == "1 delivery"
    assert plural(3, "day") == "3 days"
    assert (
        shown_name("uvicorn.error") == "bridge.http" and shown_name("bridge.poll") == "bridge.poll"
    )


def test_banner_and_combined_line() -> None:
    config = parse_config("sources:\n  gh:\n    webhook: {verify: none, allow_unsigned: true}\n")
    lines = banner_lines(config, "1.2.3", "0.0.0.0", 8080, "b.db", "r1")
    assert (
        lines[0]
        == "bridge 1.2.3 listening on 0.0.0.0:8080: 1 source, 0 targets (database b.db, replica r1)"
    )
    assert lines[1:] == [
        "  status page  http://127.0.0.1:8080/",
        "  webhook      http://127.0.0.1:8080/hooks/gh (source gh)",
        "  metrics      http://127.0.0.1:8080/metrics",
        "  api          http://127.0.0.1:8080/api/v1 (HTTP API; spec at /api/v1/openapi.json)",
    ]
    assert base_url("::", 1) == "http://[::1]:1" and base_url("10.0.0.1", 2) == "http://10.0.0.1:2"
    line = combined_line(
        client="127.0.0.1", at_s=0, request_line='GET /a"b HTTP/1.1', status=200, size=0,
        referer="", user_agent="curl/8",
    )  # fmt: skip
    assert (
        line
        == '127.0.0.1 - - [01/Jan/1970:00:00:00 +0000] "GET /a\\"b HTTP/1.1" 200 - "-" "curl/8"'
    )


def _journal_daemon(
    tmp_path: Path, config: str, log_path: Path, journal: Path | None = None
) -> subprocess.Popen[bytes]:
    """The daemon with stderr on `log_path` and `$JOURNAL_STREAM` naming `journal` (by
    default that same file, as systemd names the journal's socket to a service)."""
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(config))
    with open(log_path, "wb") as log_file:
        stat = os.stat(journal) if journal else os.fstat(log_file.fileno())
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}",
        }
        env.pop("NOTIFY_SOCKET", None)
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "-c", str(path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _failing_poll_config(port: int) -> str:
    return f"""
        database: journal.db
        server: {{listen: 127.0.0.1:{port}}}
        sources:
          api:
            poll: {{url: "http://127.0.0.1:9/items", every: 100ms, id: id}}
    """


def test_under_journald_each_line_carries_its_priority_and_no_time(tmp_path: Path) -> None:
    log_path = tmp_path / "stderr"
    proc = _journal_daemon(tmp_path, _failing_poll_config(free_port()), log_path)
    try:
        # The poll of a closed port fails: a warning, beside the start-up lines at info.
        # (A loaded machine may add apscheduler's warning of a skipped run: not this one.)
        wait_until(lambda: "WARNING bridge.poll" in log_path.read_text(), timeout_s=20)
    finally:
        assert _stop(proc) == 0
    lines = log_path.read_text().splitlines()
    assert lines
    assert all(re.match(r"<[3467]>", line) for line in lines), lines
    warning = next(line for line in lines if "bridge.poll" in line and "WARNING" in line)
    assert re.match(r"<4>WARNING +bridge\.poll: api: ", warning), warning
    assert any(re.match(r"<6>INFO +bridge\.daemon: stopped", line) for line in lines), lines
    # journald keeps the time: no line starts with a date of its own (a message may hold one:
    # apscheduler's warning of a skipped run names the next run's time).
    assert not any(re.match(r"(<\d>)?\d{4}-\d\d-\d\d \d\d:\d\d", line) for line in lines), lines


def test_with_journal_stream_naming_another_file_lines_stay_plain(tmp_path: Path) -> None:
    # A shell started from a service inherits $JOURNAL_STREAM while its stderr is elsewhere.
    log_path, other = tmp_path / "stderr", tmp_path / "other"
    other.write_text("")
    proc = _journal_daemon(tmp_path, _failing_poll_config(free_port()), log_path, other)
    try:
        wait_until(lambda: "WARNING" in log_path.read_text(), timeout_s=20)
    finally:
        _stop(proc)
    lines = log_path.read_text().splitlines()
    assert not any(line.startswith("<") for line in lines), lines
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line) for line in lines), lines


def test_syslog_priorities_of_the_levels() -> None:
    assert syslog_priority(logging.CRITICAL) == 3 and syslog_priority(logging.ERROR) == 3
    assert syslog_priority(logging.WARNING) == 4 and syslog_priority(logging.INFO) == 6
    assert syslog_priority(logging.DEBUG) == 7


def test_a_traceback_keeps_its_priority_on_every_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord(
            "bridge.x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    lines = JournalFormatter().format(record).splitlines()
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines), lines


def test_a_watchdog_abort_leaves_every_threads_stack(daemon) -> None:
    proc = daemon(
        """
        database: abort.db
        server: {listen: 127.0.0.1:{port}}
        sources:
          hook: {webhook: {verify: none, allow_unsigned: true}}
        """
    )
    proc.proc.send_signal(signal.SIGABRT)  # what systemd sends when the watchdog runs out
    proc.proc.wait(timeout=15)
    log = proc.log()
    assert "Fatal Python error: Aborted" in log, log
    assert "Current thread" in log, log


def test_a_new_database_is_one_line_in_the_log_not_one_per_migration(daemon) -> None:
    from bridge.store.sqlite.migrations import MIGRATIONS

    proc = daemon("sources:\n  a: {webhook: {verify: none, allow_unsigned: true}}\n")
    proc.terminate()
    log = proc.log()
    assert "applied migration" not in log
    last = MIGRATIONS[-1][0]
    assert log.count(f"created the schema: {len(MIGRATIONS)} migrations, up to {last}") == 1, log

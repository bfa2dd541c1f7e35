"""The processes a benchmark starts: helper servers, the daemon, and what /proc says of them.

Every process listens on 127.0.0.1 only, is waited for with a deadline, and is stopped (then
killed if it lingers) when its `with` block ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class NotAvailable(Exception):
    """A figure cannot be measured in this run (a missing engine, tool or feature)."""


class BenchError(Exception):
    """A benchmark went wrong (a process died, a deadline passed)."""


def child_env() -> dict[str, str]:
    """The environment of every process a benchmark starts: `bench` importable from anywhere."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("NOTIFY_SOCKET", None)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """A blocking GET (for control routes); returns status and body."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(url: str, timeout_s: float = 10.0) -> Any:
    """GET a control route and decode its JSON."""
    status, body = http_get(url, timeout_s)
    if status != 200:
        raise BenchError(f"GET {url} answered {status}")
    return json.loads(body)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process `pid` (from /proc/PID/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces; fields after its closing parenthesis are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    """The peak resident set size of `pid` so far, in MB (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmHWM for {pid}")


@dataclass
class Proc:
    """A started helper process with a log file and, usually, an HTTP port."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        """Raise BenchError (with the log's tail) when the process has exited."""
        if self.popen.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")

    def wait_http(self, path: str = "/healthz", timeout_s: float = 30.0) -> None:
        """Wait until GET `path` answers 200, or raise BenchError."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError):
                if http_get(self.url + path, timeout_s=1.0)[0] == 200:
                    return
            time.sleep(0.05)
        raise BenchError(f"{self.name} did not answer {path} within {timeout_s:g} s")

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it lingers; returns the exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        return self.popen.returncode


@contextlib.contextmanager
def start(
    name: str,
    argv: list[str],
    workdir: Path,
    *,
    port: int,
    health: str | None = "/healthz",
    health_timeout_s: float = 30.0,
) -> Iterator[Proc]:
    """Start `argv` with its output in `workdir/NAME.log`; wait for `health`; stop at the end."""
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log_file:
        popen = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, env=child_env(), cwd=workdir
        )
    proc = Proc(name, popen, port, log_path)
    try:
        if health:
            proc.wait_http(health, timeout_s=health_timeout_s)
        yield proc
    finally:
        proc.stop()


def start_app(
    workdir: Path, app: str, *args: str, name: str | None = None
) -> contextlib.AbstractContextManager[Proc]:
    """Start one of bench/apps.py's servers (`sink`, `upstream`) on a free port."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.apps", app, "--port", str(port), *args]
    return start(name or app, argv, workdir, port=port, health="/_health")


@contextlib.contextmanager
def start_daemon(
    workdir: Path,
    config_text: str,
    *,
    name: str = "bridge",
    log_level: str = "info",
    database: str | None = None,
    args: tuple[str, ...] = (),
    health_timeout_s: float = 30.0,
) -> Iterator[Proc]:
    """Write a config (its server listening on a free port) and start `bridge run` on it.

    `database` replaces the default file `NAME.db` (a PostgreSQL URL, for replicas); `args`
    go to `bridge run` (`--replica-id ID`).

    With `$BENCH_PROFILE_DIR` set (`python -m bench --profile`), py-spy samples the daemon
    from the moment it is healthy until it stops, and a summary of the hottest functions is
    written there.
    """
    port = free_port()
    database = database or f"{name}.db"
    config = f'database: "{database}"\nserver:\n  listen: 127.0.0.1:{port}\n' + config_text
    path = workdir / f"{name}.yaml"
    path.write_text(config)
    argv = [sys.executable, "-m", "bridge", "run", "-c", str(path), "--log-level", log_level,
            *args]  # fmt: skip
    profile_dir = os.environ.get("BENCH_PROFILE_DIR")
    with start(
        name, argv, workdir, port=port, health="/healthz", health_timeout_s=health_timeout_s
    ) as proc:
        if not profile_dir:
            yield proc
            return
        from bench import profile

        with profile.py_spy(proc.pid, Path(profile_dir) / workdir.name):
            yield proc
            proc.stop()


class CpuSampler:
    """Samples a process's CPU seconds every `interval_s` in a thread, with monotonic times."""

    def __init__(self, pid: int, interval_s: float = 0.01) -> None:
        import threading

        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic_ns(), cpu_seconds(self.pid)))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def at(self, at_ns: int) -> float:
        """CPU seconds used by the last sample taken at or before `at_ns`."""
        before = [cpu for t, cpu in self.samples if t <= at_ns]
        if not before:
            raise BenchError("no CPU sample before the time asked for")
        return before[-1]

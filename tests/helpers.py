"""Real parts for tests: free ports, HTTP servers on 127.0.0.1 in a thread, the daemon process."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

REPO = Path(__file__).resolve().parent.parent


def github_headers(secret: str, body: bytes, event: str = "issues") -> dict[str, str]:
    """The headers GitHub sends with `body`: its signature, event and a new delivery id."""
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "x-hub-signature-256": f"sha256={signature}",
        "x-github-event": event,
        "x-github-delivery": str(uuid.uuid4()),
        "content-type": "application/json",
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Any, timeout_s: float = 10.0, interval_s: float = 0.02) -> Any:
    """Poll `predicate()` until it returns something truthy, for at most `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)


async def eventually(predicate: Any, timeout_s: float = 10.0, interval_s: float = 0.01) -> Any:
    """Await until `predicate()` (sync or async) is truthy, for at most `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


class _ThreadServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def serve_app(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve an ASGI app on 127.0.0.1 in a background thread; yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan="off", proxy_headers=False
    )
    server = _ThreadServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout_s=10)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class DaemonProcess:
    """A `bridge run` subprocess."""

    config_path: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        """Until /healthz answers 200. The bound is wide: a healthy daemon ends the wait at
        once, and starting one (about a second of imports) stretches on a busy machine, as
        under `make pytest`'s workers."""

        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"bridge exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout_s=timeout_s, interval_s=0.05)

    def terminate(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, then wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_daemon(
    config_path: Path,
    port: int,
    *args: str,
    env: dict[str, str] | None = None,
    nofile: int | None = None,
    prefix: Sequence[str] = (),
) -> DaemonProcess:
    """Start `python -m bridge run -c config_path` with logs to a file beside the config.

    `nofile` lowers the process's open files limit (as `ulimit -n` would); `prefix` is a
    command that runs the daemon (e.g. `unshare ...`), which must exec it in place.
    """
    log_path = config_path.with_suffix(f".{int(time.time() * 1000)}.log")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("NOTIFY_SOCKET", None)

    def limit_files() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "bridge", "run", "-c", str(config_path), *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=config_path.parent,
            preexec_fn=limit_files if nofile is not None else None,
        )
    return DaemonProcess(config_path, port, proc, log_path, env or {})


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python -m bridge ARGS` as a user would; returns the finished process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout_s,
    )

"""Real servers nobody here wrote, started on 127.0.0.1 for a test and stopped after it.

`make tools` installs them under `.tools/`: localstripe and Datasette in a virtualenv of
their own, json-server 0.17 and 1.0 and oauth2-mock-server from npm. A test that needs one
that is not there skips and names it (`make tools` installs it); nothing else is ever
skipped.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import REPO, free_port

TOOLS = REPO / ".tools"
TOOLS_BIN = TOOLS / "venv" / "bin"
NODE_MODULES = TOOLS / "node" / "node_modules"

# The entry point of each json-server version, as its package.json names it.
JSON_SERVER = {
    "0.17": NODE_MODULES / "json-server-017" / "lib" / "cli" / "bin.js",
    "1.0": NODE_MODULES / "json-server-1" / "lib" / "bin.js",
}


@dataclass
class Server:
    """A third-party server process listening on `url`, its output in `log_path`."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def tool(name: str) -> Path:
    """The executable of a Python tool in `.tools/venv`, or a skip naming it."""
    path = TOOLS_BIN / name
    if not path.exists():
        pytest.skip(f"{name} not installed (make tools)")
    return path


def json_server_entry(version: str) -> list[str]:
    """The command that runs json-server `version` (node and its script), or a skip."""
    node = shutil.which("node")
    script = JSON_SERVER[version]
    if node is None or not script.exists():
        pytest.skip(f"json-server {version} not installed (make tools)")
    return [node, str(script)]


# oauth2-mock-server's command line (an OAuth2 authorization server issuing signed JWTs).
OAUTH2_MOCK_SERVER = NODE_MODULES / "oauth2-mock-server" / "dist" / "oauth2-mock-server.mjs"


def oauth2_mock_server_entry() -> list[str]:
    """The command that runs oauth2-mock-server (node and its script), or a skip."""
    node = shutil.which("node")
    if node is None or not OAUTH2_MOCK_SERVER.exists():
        pytest.skip("oauth2-mock-server not installed (make tools)")
    return [node, str(OAUTH2_MOCK_SERVER)]


@contextlib.contextmanager
def run_server(
    command: Sequence[str],
    port: int,
    log_path: Path,
    ready_path: str = "/",
    cwd: Path | None = None,
    timeout_s: float = 30.0,
) -> Iterator[Server]:
    """Start `command` (which listens on 127.0.0.1:`port`), wait until `ready_path` answers."""
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(list(command), stdout=log_file, stderr=subprocess.STDOUT, cwd=cwd)
    server = Server(url, proc, log_path)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{command[0]} exited with {proc.returncode}:\n{server.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + ready_path, timeout=1).status_code < 500:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"{command[0]} did not answer within {timeout_s} s")
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


__all__ = [
    "Server",
    "free_port",
    "json_server_entry",
    "oauth2_mock_server_entry",
    "run_server",
    "tool",
]

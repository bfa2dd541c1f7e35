"""Factory fixtures that clean up after themselves."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from bridge.store import Store, open_store
from tests.helpers import DaemonProcess, free_port, start_daemon

# A valid Standard Webhooks secret (the public test vector's), for targets in tests.
TEST_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a config file (YAML text, dedented) into the test's folder; returns its path."""

    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start real `bridge run` processes; every one left running is killed at the end."""
    started: list[DaemonProcess] = []

    def start(
        config_text: str = "",
        *args: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
        nofile: int | None = None,
        prefix: Sequence[str] = (),
    ) -> DaemonProcess:
        port = port or free_port()
        body = textwrap.dedent(config_text).strip("\n").replace("{port}", str(port))
        # A config that has its own server section must listen on {port} itself.
        has_server = re.search(r"^server:", body, re.MULTILINE)
        text = ("" if has_server else f"server:\n  listen: 127.0.0.1:{port}\n") + body + "\n"
        path = tmp_path / f"daemon-{len(started)}.yaml"
        path.write_text(text)
        proc = start_daemon(path, port, *args, env=env, nofile=nofile, prefix=prefix)
        started.append(proc)
        if wait:
            proc.wait_healthy()
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server's URL (see tests/pg.py); skips, saying why, when there is none."""
    from tests import pg

    with pg.server() as url:
        if url is None:
            pytest.skip(pg.NO_SERVER)
        yield url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL of the test server with a fresh schema of its own, dropped after the test."""
    from tests import pg

    with pg.fresh_schema(postgres_server) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Store]]:
    """Opens stores on one database of this backend, each closed after the test."""
    if request.param == "sqlite":
        location = str(tmp_path / "state" / "bridge.db")
    else:
        location = request.getfixturevalue("postgres_url")
    opened: list[Store] = []

    def open_one(replica_id: str | None = None) -> Store:
        s = open_store(location, replica_id=replica_id)
        s.open()
        opened.append(s)
        return s

    yield open_one
    for s in opened:
        s.close()


@pytest.fixture
def any_store(backend: Callable[..., Store]) -> Store:
    """One open store on each backend in turn."""
    return backend()

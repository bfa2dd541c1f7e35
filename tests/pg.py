"""A PostgreSQL server for the tests, and a fresh schema per test.

`make test` uses `BRIDGE_TEST_POSTGRES_URL` when it is set (CI sets it); otherwise a
throwaway server is started with `initdb`/`pg_ctl` in a temporary folder when they are
installed. Only when neither is possible do the PostgreSQL tests skip, saying why.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.helpers import free_port

ENV = "BRIDGE_TEST_POSTGRES_URL"


def _as_postgres_user() -> list[str]:
    """initdb refuses to run as root: run it as the `postgres` user then."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root and there is no postgres user for initdb") from exc
    return ["runuser", "-u", "postgres", "--"]


@contextmanager
def throwaway_server() -> Iterator[str]:
    """Start a PostgreSQL server in a temporary folder; yield its URL; remove it after."""
    folder = Path(tempfile.mkdtemp(prefix="bridge-pg-"))
    prefix = _as_postgres_user()
    if prefix:
        shutil.chown(folder, "postgres", "postgres")
    data = folder / "data"
    port = free_port()
    log = folder / "server.log"
    subprocess.run(
        [*prefix, "initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*prefix, "pg_ctl", "-D", str(data), "-o", options, "-l", str(log), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, "pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)


NO_SERVER = f"no PostgreSQL: {ENV} is not set and initdb/pg_ctl are not installed"


@contextmanager
def server() -> Iterator[str | None]:
    """The URL of a server to test against, or None when there is none (see NO_SERVER)."""
    url = os.environ.get(ENV)
    if url:
        yield url
        return
    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        yield None
        return
    with throwaway_server() as url:
        yield url


def with_schema(url: str, schema: str) -> str:
    """`url` with `search_path` set to `schema`, so every table lives in that schema."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


@contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A new, empty schema on the server at `url`; yields a URL that uses it; dropped after."""
    schema = f"bridge_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_schema(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')

"""Fixtures the polling tests share: a real SQLite store and a scripted HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge.store.sqlite import SQLiteStore
from tests.scripted_server import Script, scripted_server


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """A SQLite store in the test's folder, closed after the test."""
    s = SQLiteStore(tmp_path / "bridge.db")
    s.open()
    yield s
    s.close()


@pytest.fixture
def server() -> Iterator[tuple[Script, str]]:
    """A scripted HTTP server on 127.0.0.1 and its base URL."""
    with scripted_server() as served:
        yield served

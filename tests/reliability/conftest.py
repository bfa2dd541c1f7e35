"""Every test of the suite ends with a check that no log it produced holds a secret."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.parts import leaked_secrets


@pytest.fixture(autouse=True)
def no_secret_in_logs(tmp_path: Path) -> Iterator[None]:
    """After the test: grep every daemon log in its folder for every secret of its configs."""
    yield
    assert leaked_secrets(tmp_path) == []

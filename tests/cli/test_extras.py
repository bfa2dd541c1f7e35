"""Without an extra installed, the feature that needs it says so in one line and exits 1."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner

from bridge.cli import cli


@pytest.fixture
def hide(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Make modules unimportable, as when the extra is not installed; `forget` the modules
    already imported that import them, so they are imported again (and dropped after)."""
    before = set(sys.modules)

    def hide(*names: str, forget: tuple[str, ...] = ()) -> None:
        for name in list(sys.modules):
            if any(name == n or name.startswith(n + ".") for n in (*names, *forget)):
                monkeypatch.delitem(sys.modules, name)
        for name in names:
            monkeypatch.setitem(sys.modules, name, None)

    yield hide
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_latency_plot_without_matplotlib_names_the_plot_extra(hide, write_config) -> None:
    hide("matplotlib")
    path = write_config("database: never.db\n")
    result = CliRunner().invoke(cli, ["latency", "-c", str(path), "--plot", "x.png"])
    assert result.exit_code == 1
    assert result.stderr == (
        "bridge: the latency picture needs matplotlib, which is not installed:"
        " pip install '.[plot]' (from the bridge's checkout)\n"
    )
    assert result.stdout == ""


def test_postgres_url_without_psycopg_names_the_postgres_extra(hide, write_config) -> None:
    hide("psycopg", "psycopg_pool", forget=("bridge.store.postgres",))
    path = write_config("database: postgresql://bridge@127.0.0.1:1/bridge\n")
    result = CliRunner().invoke(cli, ["events", "-c", str(path)])
    assert result.exit_code == 1
    assert result.stderr == (
        "bridge: a postgresql:// database needs psycopg, which is not installed:"
        " pip install '.[postgres]' (from the bridge's checkout)\n"
    )

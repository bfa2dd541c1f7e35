"""The edge of the command line: errors to one line and an exit status, and shared options.

Exit status: 0 success, 1 a runtime failure (cannot start, store failure), 2 a usage or
config mistake.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from bridge.config import Config, load_config
from bridge.errors import BridgeError, ConfigError, config_mistakes
from bridge.logs import is_journal
from bridge.masking import mask_url
from bridge.terminal import cell, printable, printable_lines

F = TypeVar("F", bound=Callable[..., Any])


class Failure(click.ClickException):
    """A runtime failure: one line on stderr and exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        to_stderr(f"bridge: {printable_lines(self.format_message())}")


class ConfigFailure(Failure):
    """A config mistake: one line on stderr and exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        to_stderr(printable_lines(self.format_message()))


def to_stderr(text: str) -> None:
    """An error's lines on stderr; under systemd each carries journald's priority `<3>` (error),
    as the daemon's own ERROR lines do, so `journalctl -p err` shows why a command failed."""
    if is_journal():
        text = "\n".join(f"<3>{line}" for line in text.split("\n"))
    click.echo(text, err=True)


def config_option(fn: F) -> F:
    """The `-c/--config` option shared by every command that reads the config."""
    return click.option(
        "-c",
        "--config",
        "config_path",
        envvar="BRIDGE_CONFIG",
        default="config.yaml",
        show_default=True,
        metavar="FILE",
        help="The YAML config file (else $BRIDGE_CONFIG, else ./config.yaml).",
    )(fn)


def handle_errors(fn: F) -> F:
    """Turn the bridge's errors into one line and an exit status."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            raise ConfigFailure(str(exc)) from None
        except BridgeError as exc:
            raise Failure(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def read_config(path: str) -> Config:
    """Load the config, or exit 2 with one line."""
    try:
        return load_config(path)
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from None


def url_masker(config: Config) -> Callable[[str], str]:
    """How the URLs of `config` are shown: `mask_url`, with the config's own secrets."""
    from bridge.logs import config_secrets

    secrets = frozenset(config_secrets(config))
    return lambda url: mask_url(url, secrets)


def database_option(fn: F) -> F:
    """The `--database` option of the commands that only read the database."""
    return click.option(
        "--database",
        metavar="PATH",
        help="Read this database (a path or a postgresql:// URL) instead of the config's;"
        " then a config that does not load is no obstacle.",
    )(fn)


def duration_option(name: str, help: str) -> Callable[[F], F]:
    """An option that takes a duration (`15m`, `1h`, `7d`) and gives seconds."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
        if value is None:
            return None
        from bridge.config import parse_duration

        try:
            return parse_duration(value)
        except ValueError as exc:
            raise click.BadParameter(f"{value!r} {exc}") from None

    return click.option(name, metavar="DURATION", callback=parse, help=help)


def config_for_reading(config_path: str, database: str | None) -> Config:
    """The config, for a command that only reads the database.

    With `--database`, a config that does not load is set aside (one line on stderr) and the
    database is read alone; without it, the config must load (exit 2 otherwise).
    """
    if database is None:
        return read_config(config_path)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        if not _is_missing(exc):
            mistakes = config_mistakes(exc)
            more = f" and {len(mistakes) - 1} more" if len(mistakes) > 1 else ""
            click.echo(
                f"bridge: config not used ({mistakes[0]}{more}); reading {database} alone",
                err=True,
            )
        config = Config()
    return config.model_copy(update={"database": database, "path": None})


def _is_missing(exc: ConfigError) -> bool:
    return str(exc).endswith("no such file")


def is_config_less(config: Config) -> bool:
    """True for the stand-in config of `config_for_reading` when the file did not load."""
    return config.path is None and not config.sources and not config.targets


def existing_database(config: Config) -> str:
    """The config's database location, or exit 1 when it is a path with no file."""
    location = config.database_path
    if "://" not in location and location != ":memory:" and not Path(location).exists():
        raise Failure(f"no database at {location}: the bridge has not run with this config")
    return location


def console() -> Any:
    """The rich console tables print to: the terminal's width, or 200 columns when piped
    (nothing to fit then, and ids are not cut)."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def say(text: object, err: bool = False) -> None:
    """Print one line of human-readable output, every control character in it escaped
    (`terminal.printable`): what it holds may have come from outside."""
    click.echo(printable(text), err=err)


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]], title: str = "") -> None:
    """Rows as a borderless table with padded columns, a header and an optional title; each
    cell printable and never read as markup (`terminal.cell`)."""
    from rich.table import Table

    table = Table(box=None, title=title or None, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(cell(text) for text in row))
    console().print(table)

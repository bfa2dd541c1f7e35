"""The edge of the command line: errors to one line and an exit status, and shared options.

Exit status: 0 success, 1 a runtime failure (cannot start, store failure), 2 a usage or
config mistake.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from bridge.config import Config, load_config
from bridge.errors import BridgeError, ConfigError
from bridge.masking import mask_url

F = TypeVar("F", bound=Callable[..., Any])


class Failure(click.ClickException):
    """A runtime failure: one line on stderr and exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"bridge: {self.format_message()}", err=True)


class ConfigFailure(Failure):
    """A config mistake: one line on stderr and exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(self.format_message(), err=True)


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

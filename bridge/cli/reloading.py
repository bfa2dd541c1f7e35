"""`bridge reload`: signal the running daemon, then wait for its verdict on the new file.

The daemon counts finished reloads in its `/api/status` (`bridge.reloads`) and keeps the
reason of the last refusal (`reload_error`): the command reads the count, sends SIGHUP,
and waits, bounded, for the count to move. A file that does not load is still signalled
(the daemon records the refusal for its status and page) and refused here with its lines.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import click

from bridge.cli.daemon_api import daemon_status, daemon_url
from bridge.cli.edge import ConfigFailure, Failure
from bridge.config import load_config
from bridge.errors import ConfigError

_ASK_S = 2.0  # one status request
_INTERVAL_S = 0.1  # between status requests while waiting


def reload_daemon(config_path: str, pid: int | None, timeout_s: float) -> None:
    """Reload and report: returns when applied; raises Failure or ConfigFailure otherwise."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        if pid is not None:
            _signal(pid)  # the daemon refuses it too, and shows why on its status page
        raise ConfigFailure(f"reload refused, the config in force is unchanged:\n{exc}") from None
    before = daemon_status(config, _ASK_S)
    if before is None:
        where = daemon_url(config, "/api/status")
        if pid is None:
            raise Failure(f"no bridge answers at {where}: is it running? (or give --pid)")
        _signal(pid)
        raise Failure(f"sent SIGHUP to {pid}, but no bridge answers at {where} with its verdict")
    count = _reloads(before)
    _signal(pid if pid is not None else _pid(before))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(_INTERVAL_S)
        after = daemon_status(config, _ASK_S)
        if after is not None and _reloads(after) > count:
            error = after.get("reload_error")
            if error:
                raise Failure(f"reload refused, the config in force is unchanged: {error}")
            click.echo(f"reloaded {config_path}")
            return
    raise Failure(f"no verdict from the bridge within {timeout_s:g} s (see its log)")


def _reloads(status: dict[str, Any]) -> int:
    value = status.get("bridge", {}).get("reloads")
    if not isinstance(value, int):
        raise Failure("the running bridge does not report its reloads: restart it to upgrade")
    return value


def _pid(status: dict[str, Any]) -> int:
    value = status.get("bridge", {}).get("pid")
    if not isinstance(value, int):
        raise Failure("the running bridge does not report its process id: give --pid")
    return value


def _signal(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise Failure(f"no process {pid}") from None
    except PermissionError:
        raise Failure(f"not allowed to signal process {pid} (run as its user or root)") from None

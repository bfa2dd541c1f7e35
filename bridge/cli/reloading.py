"""`bridge reload`: signal the running daemon, then wait for its verdict on the new file.

The daemon counts finished reloads in its `/api/status` (`bridge.reloads`) and keeps the
reason of the last refusal (`reload_error`): the command reads the count, sends SIGHUP,
and waits, bounded, for the count to move. A file that does not load is still signalled
(the daemon records the refusal for its status and page) and refused here with its lines.

Under systemd the command is the unit's `ExecReload`, which gets no credentials (systemd
252 to 256 give `LoadCredential=` to the main process only): a `${credential:NAME}` it
cannot read is left for the daemon to judge, and when that hides the admin token the
verdict is read from `/metrics` (`bridge_config_reloads_total`), which needs none; the
reason of a refusal is then in the daemon's log.
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass

import click
import httpx
import yaml

from bridge.cli.daemon_api import ask_daemon, daemon_url
from bridge.cli.edge import ConfigFailure, Failure
from bridge.config import Config, ServerConfig, load_config
from bridge.config.loader import resolve
from bridge.errors import ConfigError, config_mistakes

_ASK_S = 2.0  # one status request
_INTERVAL_S = 0.1  # between status requests while waiting


_CREDENTIAL_RE = re.compile(r"\$\{credential:[^}]*\}: (\$CREDENTIALS_DIRECTORY is not set|no such)")
_RELOADS_RE = re.compile(
    r'^bridge_config_reloads_total\{outcome="(applied|refused)"\} (\S+)$', re.M
)


@dataclass(frozen=True)
class Verdicts:
    """What the daemon says of its reloads so far: how many finished, how many were
    refused, the reason of the last refusal (None from `/metrics`), its process id."""

    finished: int
    refused: int
    reason: str | None
    pid: int | None


def reload_daemon(config_path: str, pid: int | None, timeout_s: float) -> None:
    """Reload and report: returns when applied; raises Failure or ConfigFailure otherwise."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        # A credential this process cannot read is the daemon's to judge (ExecReload
        # gets none): only the other mistakes are this command's to report.
        mine = [m for m in config_mistakes(exc) if not _CREDENTIAL_RE.search(m.message)]
        if mine:
            if pid is not None:
                _signal(pid)  # the daemon refuses it too, and shows why on its status page
            lines = "\n".join(str(m) for m in mine)
            raise ConfigFailure(
                f"reload refused, the config in force is unchanged:\n{lines}"
            ) from None
        config = _server_only(config_path)
    before = _ask(config)
    if before is None:
        where = daemon_url(config, "/api/status")
        if pid is None:
            raise Failure(f"no bridge answers at {where}: is it running? (or give --pid)")
        _signal(pid)
        raise Failure(f"sent SIGHUP to {pid}, but no bridge answers at {where} with its verdict")
    if pid is None and before.pid is None:
        raise Failure("the running bridge does not report its process id: give --pid")
    _signal(pid if pid is not None else before.pid)  # type: ignore[arg-type]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(_INTERVAL_S)
        after = _ask(config)
        if after is None or after.finished <= before.finished:
            continue
        if after.reason:
            raise Failure(f"reload refused, the config in force is unchanged: {after.reason}")
        if after.refused > before.refused:
            raise Failure(
                "reload refused, the config in force is unchanged (why: the bridge's log,"
                " or `bridge status`)"
            )
        click.echo(f"reloaded {config_path}")
        return
    raise Failure(f"no verdict from the bridge within {timeout_s:g} s (see its log)")


def _server_only(config_path: str) -> Config:
    """The config's `server` section alone, each `${...}` this process can resolve resolved
    and the others left out (the admin token among them, perhaps): enough to ask."""
    try:
        with open(config_path, encoding="utf-8") as file:
            data = yaml.safe_load(file)
        section = data.get("server") or {}
        kept = {}
        for key, value in section.items():
            try:
                kept[key] = resolve(value) if isinstance(value, str) else value
            except ConfigError:
                continue
        return Config(server=ServerConfig.model_validate(kept))
    except (OSError, yaml.YAMLError, AttributeError, ValueError):
        return Config()


def _ask(config: Config) -> Verdicts | None:
    """The verdicts from `/api/status`; from `/metrics` when the status needs a token this
    process does not have; None when no daemon answers."""
    try:
        response = ask_daemon(config, "GET", "/api/status", _ASK_S)
        if response.status_code in (401, 403):
            return _from_metrics(ask_daemon(config, "GET", "/metrics", _ASK_S))
        response.raise_for_status()
        status = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    bridge = status.get("bridge", {}) if isinstance(status, dict) else {}
    finished, pid = bridge.get("reloads"), bridge.get("pid")
    if not isinstance(finished, int):
        raise Failure("the running bridge does not report its reloads: restart it to upgrade")
    reason = status.get("reload_error") or None
    return Verdicts(finished, 0, reason, pid if isinstance(pid, int) else None)


def _from_metrics(response: httpx.Response) -> Verdicts | None:
    if response.status_code != 200:
        return None
    counts = {kind: int(float(n)) for kind, n in _RELOADS_RE.findall(response.text)}
    refused = counts.get("refused", 0)
    return Verdicts(counts.get("applied", 0) + refused, refused, None, None)


def _signal(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise Failure(f"no process {pid}") from None
    except PermissionError:
        raise Failure(f"not allowed to signal process {pid} (run as its user or root)") from None

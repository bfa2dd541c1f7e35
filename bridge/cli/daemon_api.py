"""Asking the running daemon: its address from `server.listen`, its admin token, one request.

Used by the commands that need what only the daemon knows or does: `bridge status` (the
budgets' use, a refused reload) and `bridge poll SOURCE` (a poll now).
"""

from __future__ import annotations

from typing import Any

import httpx

from bridge.config import Config, ServerConfig


def base_url(server: ServerConfig) -> str:
    """The URL of the daemon listening at `server.listen` (a wildcard as loopback)."""
    host = server.host
    if host in ("", "::") or host.strip("0.") == "":  # listening on every address
        host = "::1" if ":" in host else "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{server.port}"


def daemon_url(config: Config, path: str) -> str:
    """The URL of `path` on the daemon listening at `server.listen`."""
    return base_url(config.server) + path


def admin_headers(config: Config | ServerConfig) -> dict[str, str]:
    """The Authorization header of the admin routes, when `server.admin_token` is set."""
    server = config.server if isinstance(config, Config) else config
    token = server.admin_token
    return {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}


def ask_daemon(config: Config, method: str, path: str, timeout_s: float) -> httpx.Response:
    """One request to the running daemon; raises httpx.HTTPError when none answers."""
    return httpx.request(
        method, daemon_url(config, path), headers=admin_headers(config), timeout=timeout_s
    )


def daemon_status(config: Config, timeout_s: float) -> dict[str, Any] | None:
    """The daemon's `/api/status`, or None when no daemon answers (or not with JSON)."""
    return status_at(base_url(config.server), admin_headers(config), timeout_s)


def status_at(url: str, headers: dict[str, str], timeout_s: float) -> dict[str, Any] | None:
    """The `/api/status` of the daemon at `url` (its base), or None when none answers."""
    try:
        response = httpx.get(url.rstrip("/") + "/api/status", headers=headers, timeout=timeout_s)
        response.raise_for_status()
        data = response.json()
    except (httpx.HTTPError, httpx.InvalidURL, ValueError):
        return None
    return data if isinstance(data, dict) else None

"""The start-up banner: the version, where the bridge listens, and the URLs to open or call.

    bridge 0.1.0 listening on 127.0.0.1:8080: 2 sources, 1 target (database ..., replica ...)
      status page  http://127.0.0.1:8080/
      webhook      http://127.0.0.1:8080/hooks/github (source github)
      metrics      http://127.0.0.1:8080/metrics
      api          http://127.0.0.1:8080/api/v1 (HTTP API; spec at /api/v1/openapi.json)

Pure: the daemon logs each line at `info`.
"""

from __future__ import annotations

from bridge.api import PREFIX
from bridge.config import Config
from bridge.logs import plural


def base_url(host: str, port: int) -> str:
    """The URL a local client reaches the server at: a wildcard address as the loopback one."""
    if host == "" or host.strip("0.") == "":  # the IPv4 wildcard
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def banner_lines(
    config: Config, version: str, host: str, port: int, database: str, replica: str
) -> list[str]:
    """The banner's lines: the first says what runs, one URL per line after it."""
    base = base_url(host, port)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [
        f"bridge {version} listening on {where}: {plural(len(config.sources), 'source')},"
        f" {plural(len(config.targets), 'target')} (database {database}, replica {replica})",
        f"  status page  {base}/",
    ]
    for name, source in config.sources.items():
        if source.webhook is not None:
            lines.append(f"  webhook      {base}{config.webhook_path(name)} (source {name})")
    lines.append(f"  metrics      {base}/metrics")
    lines.append(f"  api          {base}{PREFIX} (HTTP API; spec at {PREFIX}/openapi.json)")
    return lines

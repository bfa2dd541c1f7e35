"""A polled source's URLs: shown without their secrets, merged with query parameters, and
their origin (which a credential never leaves)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

_DEFAULT_PORTS = {"http": 80, "https": 443}


def safe_url(url: str | httpx.URL) -> str:
    """The URL without its query and credentials, for messages (a query may hold a token)."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@lru_cache(maxsize=4096)
def configured_url(url: str) -> httpx.URL:
    """A URL of the config, parsed once (httpx.URL is immutable), not at every poll: its
    parse was a tenth of an idle poll's CPU. Only the config's URLs: an upstream's (a next
    page, a delta link) may carry a token, which no cache keeps."""
    return httpx.URL(url)


def request_url(url: str | httpx.URL, params: dict[str, Any] | None = None) -> httpx.URL:
    """`url` with its query string kept and `params` merged in (a key in both: `params` wins)."""
    base = url if isinstance(url, httpx.URL) else httpx.URL(url)
    return base.copy_merge_params(params) if params else base


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """Scheme, host and port, the default port made explicit."""
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)

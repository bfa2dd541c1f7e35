"""The polls' HTTP transport: httpx's interface over aiohttp's connection pool.

Polls speak httpx (`httpx.AsyncClient`: requests, headers, cookies, streaming, content
decoding); under it, this transport sends each request with aiohttp. httpcore's pool costs
the event loop a great deal per request once sources are many: it asks the socket of every
pooled connection whether it is readable (`getpeername` and a `select` per connection each
time one is reused) and scans its connections against its queue on every start and end.
Measured with 2,000 sources every 12 s (167 polls a second) in one run: httpcore's pool kept
the loop busy throughout, its polls up to 12 s late (lag p99) at 60% of a core; this one
kept them on time (lag p99 57 ms) at 47% (see docs/benchmarks.md).

`new_client` makes the client every poll uses, on this transport.

What this keeps of httpx's own transport:
- the URL is sent exactly as httpx built it (yarl would re-quote its query otherwise), less
  any `user:password`, which httpx has sent as `Authorization: Basic`;
- no header of aiohttp's own (it would add a `Content-Type` to a bodiless POST); header
  lines up to 64 KiB, as httpcore reads them (aiohttp's default is 8 KiB);
- no redirect is followed and nothing decoded here: httpx follows nothing (fetch.py decides)
  and decodes gzip, deflate and brotli itself;
- proxies from the environment (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`) are used, as httpx
  does; read once, when the transport is made (aiohttp's own `trust_env` would also read
  `~/.netrc` at every request);
- errors become httpx's, by what happened: a connection the server closed is a
  `RemoteProtocolError` (fetch.py retries a stale keep-alive one once), a reset is a
  `ReadError`, writing to a closing one a `WriteError`, no connection a `ConnectError`, a
  timeout a `ConnectTimeout` or `ReadTimeout`. (The `httpx-aiohttp` package maps a closed
  connection to `ConnectTimeout` and re-quotes the URL, which is why this is ours.)
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import yarl
from multidict import CIMultiDict

from bridge import __version__

USER_AGENT = f"bridge/{__version__}"

# aiohttp's exceptions, most specific first, and the httpx exception each becomes.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # a malformed answer
    (aiohttp.ClientOSError, httpx.ReadError),
    (aiohttp.ClientConnectionResetError, httpx.WriteError),  # writing to a closing socket
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (asyncio.TimeoutError, httpx.TimeoutException),
    (aiohttp.ClientError, httpx.TransportError),
)


def _as_httpx(exc: BaseException, request: httpx.Request) -> httpx.TransportError | None:
    for kind, mapped in _ERRORS:
        if isinstance(exc, kind):
            return mapped(str(exc) or kind.__name__, request=request)
    return None


class _Body(httpx.AsyncByteStream):
    """An aiohttp answer's body as httpx reads it; closing it releases the connection."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except Exception as exc:
            mapped = _as_httpx(exc, self._request)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        # Read to the end: the connection goes back to the pool; else it is closed.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends with one aiohttp session (made on first use)."""

    def __init__(self, *, connections: int = 100, keepalive_s: float = 5.0) -> None:
        self._connections = connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._proxies = {
            scheme: url
            for scheme, url in urllib.request.getproxies_environment().items()
            if scheme in ("http", "https", "all", "no")
        }

    def _proxy_for(self, url: httpx.URL) -> str | None:
        """The proxy of `url` from the environment, unless `NO_PROXY` exempts its host."""
        proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
        # proxy_bypass_environment: the stdlib's NO_PROXY rules (not in typeshed).
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
        if proxy is None or bypass(url.host, self._proxies):
            return None
        return proxy

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._connections,
                keepalive_timeout=self._keepalive_s,
                ssl=_ssl_context(),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # httpx keeps the cookies
                # httpx sets what it means to send; aiohttp would add an octet-stream
                # Content-Type to a POST without a body, which some APIs answer with a 415.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                # httpcore reads header lines of up to 100 KiB; aiohttp stops at 8 KiB, and
                # APIs send long `Link` headers.
                max_line_size=65536,
                max_field_size=65536,
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open()
        timeout = request.extensions.get("timeout", {})
        body = await request.aread()
        headers = CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower() != b"transfer-encoding"
        )
        try:
            response = await session.request(
                request.method,
                # httpx has made any user:password of the URL its Authorization header;
                # aiohttp refuses a request with both.
                yarl.URL(str(request.url.copy_with(userinfo=b"")), encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                compress=None,
                proxy=self._proxy_for(request.url),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        except Exception as exc:
            mapped = _as_httpx(exc, request)
            if mapped is None:
                raise
            raise mapped from exc
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_Body(response, request),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _ssl_context() -> ssl.SSLContext:
    """The certificate checks httpx makes by default (certifi's roots)."""
    return httpx.create_ssl_context()


class _AnswerCookies(httpx.Cookies):
    """httpx's cookies, read from an answer only when it sets one: to hand an answer to
    `http.cookiejar`, httpx copies its headers into an `email.message.Message`, every answer,
    a tenth of an idle poll's CPU (make bench's idle cost)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


class _Client(httpx.AsyncClient):
    """httpx's client with `_AnswerCookies` (it keeps its cookies through the `cookies`
    property, which this one overrides)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._answer_cookies = _AnswerCookies(kwargs.get("cookies"))

    @property
    def cookies(self) -> httpx.Cookies:
        return self._answer_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._answer_cookies = _AnswerCookies(cookies)


def new_client(connections: int = 100) -> httpx.AsyncClient:
    """The HTTP client polls share: no redirect followed by itself, the bridge's User-Agent,
    at most `connections` open, over aiohttp's pool; cookies an answer sets are sent back
    to their domain, as httpx does."""
    return _Client(
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        transport=AiohttpTransport(connections=connections),
    )

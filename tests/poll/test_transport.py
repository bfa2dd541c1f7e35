"""The polls' transport (bridge/poll/transport.py): httpx over aiohttp, against real servers.

What it must keep of httpx's own transport: the URL as built, proxies from the environment,
and errors mapped by what happened, so that fetch.py's faults and its one retry of a stale
keep-alive connection stay right.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import aiohttp
import httpx
import pytest

from bridge.config import PollConfig
from bridge.errors import FetchError
from bridge.poll.fetch import fetch
from bridge.poll.transport import _as_httpx, new_client
from tests.scripted_server import Reply, Script

pytestmark = pytest.mark.anyio


def poll_of(url: str, **more: object) -> PollConfig:
    return PollConfig.model_validate({"url": url, "every": 5, "id": "id", **more})


async def test_the_url_is_sent_exactly_as_built(server: tuple[Script, str]) -> None:
    script, base = server
    path = "/items/a%2Fb?q=a%2Cb&t=%7E&s=a+b&e=&tag=x&tag=y"
    script.route("/items/a%2Fb", Reply(body=[{"id": 1}]))
    async with new_client() as client:
        got = await fetch(client, poll_of(base + path))
    assert got.items == [{"id": 1}]
    assert script.paths() == [path]


async def test_the_request_carries_the_bridge_headers_once(server: tuple[Script, str]) -> None:
    script, base = server
    script.route("/items", Reply(body=[{"id": 1}]))
    async with new_client() as client:
        await fetch(client, poll_of(base + "/items", headers={"Authorization": "Bearer t"}))
    headers = script.seen[0].headers
    assert headers["user-agent"].startswith("bridge/")
    assert headers["authorization"] == "Bearer t"
    # httpx asks for what it can decode; aiohttp adds nothing of its own.
    assert "gzip" in headers["accept-encoding"] and "aiohttp" not in headers["user-agent"]


async def test_a_cookie_an_answer_sets_goes_back_with_the_later_polls(
    server: tuple[Script, str],
) -> None:
    script, base = server
    script.route("/login", Reply(body=[{"id": 1}], headers=[("Set-Cookie", "session=abc; Path=/")]))
    script.route("/items", Reply(body=[{"id": 2}]))
    async with new_client() as client:
        await fetch(client, poll_of(base + "/items"))  # an answer without Set-Cookie
        await fetch(client, poll_of(base + "/login"))
        await fetch(client, poll_of(base + "/items"))
        client.cookies = {}  # set as httpx's own client is: forgotten
        await fetch(client, poll_of(base + "/items"))
    assert [seen.headers.get("cookie") for seen in script.seen] == [None, None, "session=abc", None]


async def test_credentials_in_the_url_go_as_basic_auth(server: tuple[Script, str]) -> None:
    script, base = server
    script.route("/items", Reply(body=[{"id": 1}]))
    with_user = base.replace("http://", "http://reader:s3cret@") + "/items?x=1"
    async with new_client() as client:
        got = await fetch(client, poll_of(with_user))
    assert got.items == [{"id": 1}]
    assert script.paths() == ["/items?x=1"]
    assert script.seen[0].headers["authorization"] == "Basic cmVhZGVyOnMzY3JldA=="


async def test_a_bodiless_post_carries_no_content_type(server: tuple[Script, str]) -> None:
    script, base = server
    script.route("/search", Reply(body=[{"id": 2}]))
    async with new_client() as client:
        got = await fetch(client, poll_of(base + "/search", method="POST"))
    assert got.items == [{"id": 2}]
    assert "content-type" not in script.seen[0].headers


async def test_a_long_link_header_is_read(server: tuple[Script, str]) -> None:
    # httpcore reads header lines of up to 100 KiB; aiohttp's default stops at 8 KiB.
    script, base = server
    long_next = base + "/items?page=2&" + "f=" + "x" * 9000
    script.route("/items", lambda seen: Reply(body=[{"id": 1}], headers=[
        ("Link", f'<{long_next}>; rel="next"')] if "page=2" not in seen.path else []))  # fmt: skip
    async with new_client() as client:
        got = await fetch(client, poll_of(base + "/items", pages="link"))
    assert got.items == [{"id": 1}, {"id": 1}] and got.requests == 2


async def test_a_gzip_answer_is_decoded_once(server: tuple[Script, str]) -> None:
    script, base = server
    script.route("/items", Reply(body=[{"id": 7}], encoding="gzip"))
    async with new_client() as client:
        got = await fetch(client, poll_of(base + "/items"))
    assert got.items == [{"id": 7}]


async def test_a_proxy_from_the_environment_is_used(
    server: tuple[Script, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    script, base = server
    # The scripted server plays the proxy: it sees the request in absolute form.
    script.route("http://upstream.invalid/items", Reply(body=[{"id": 3}]))
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", base)
    async with new_client() as client:
        got = await fetch(client, poll_of("http://upstream.invalid/items"))
    assert got.items == [{"id": 3}]
    assert script.paths() == ["http://upstream.invalid/items"]


async def test_no_proxy_exempts_its_hosts(
    server: tuple[Script, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    script, base = server
    script.route("/items", Reply(body=[{"id": 4}]))
    with socket.create_server(("127.0.0.1", 0)) as dead:  # a proxy that never answers
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead.getsockname()[1]}")
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        async with new_client() as client:
            got = await fetch(client, poll_of(base + "/items", timeout="2s"))
    assert got.items == [{"id": 4}] and script.paths() == ["/items"]


@contextlib.contextmanager
def raw_server(answer: bytes) -> Iterator[str]:
    """A socket on 127.0.0.1 that reads a request, writes `answer` and hangs up (at most 5)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        for _ in range(5):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/items"
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (Linux)
        listener.close()
        thread.join(timeout=10)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[{",
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[{"id',
        b"NOT HTTP AT ALL\r\n\r\n",
        b"",
    ],
    ids=["cut-short", "chunk-cut", "not-http", "hang-up"],
)
async def test_a_broken_answer_is_a_connection_fault(answer: bytes) -> None:
    with raw_server(answer) as url:
        async with new_client() as client:
            with pytest.raises(FetchError) as caught:
                await fetch(client, poll_of(url, timeout="5s"))
    assert caught.value.reason == "connection"


async def test_no_listener_is_a_connection_fault_and_a_silent_one_a_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        closed = socket.create_server(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        async with new_client() as client:
            with pytest.raises(FetchError) as refused:
                await fetch(client, poll_of(f"http://127.0.0.1:{port}/items"))
            silent_url = f"http://127.0.0.1:{silent.getsockname()[1]}/items"
            with pytest.raises(FetchError) as waited:
                await fetch(client, poll_of(silent_url, timeout="300ms"))
    assert refused.value.reason == "connection"
    assert waited.value.reason == "timeout"


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), httpx.ReadError),
        (aiohttp.ConnectionTimeoutError("connect"), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout),
        (aiohttp.ClientPayloadError("cut"), httpx.RemoteProtocolError),
        (aiohttp.ClientConnectionResetError("closing transport"), httpx.WriteError),
        (TimeoutError(), httpx.TimeoutException),
    ],
)
@pytest.mark.filterwarnings("ignore")
def test_aiohttp_errors_become_the_httpx_error_of_what_happened(
    raised: BaseException, expected: type[httpx.TransportError]
) -> None:
    # A unit of one function: a closed keep-alive connection must stay a protocol error
    # (fetch.py retries it once), never a timeout.
    request = httpx.Request("GET", "http://127.0.0.1:9/")
    mapped = _as_httpx(raised, request)
    assert type(mapped) is expected
    assert _as_httpx(ValueError("not ours"), request) is None

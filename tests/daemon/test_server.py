"""The server's pure parts: the loopback judgement, the connection cap, the accept-error log."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import socket

import pytest

from bridge.daemon.lifespan import event_loop_factory, freeze_heap
from bridge.daemon.server import (
    OneWriteCycle,
    bind,
    connection_cap,
    is_loopback_address,
    listens_on_loopback,
    quiet_accept_errors,
)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.2", False),
        ("fe80::1%eth0", False),
        ("127.0.0.1.nip.io", False),  # a name, whatever it looks like
        ("localhost", False),
    ],
)
def test_loopback_is_decided_from_the_address(address: str, expected: bool) -> None:
    assert is_loopback_address(address) is expected


def test_a_socket_bound_to_loopback_says_so() -> None:
    sock = bind("127.0.0.1", 0)
    try:
        assert listens_on_loopback(sock)
    finally:
        sock.close()
    sock = bind("0.0.0.0", 0)
    try:
        assert not listens_on_loopback(sock)
    finally:
        sock.close()


def test_the_connection_cap_fits_three_quarters_of_the_descriptors() -> None:
    assert connection_cap(1024, None) == 1024
    assert connection_cap(1024, 2048) == 1024
    assert connection_cap(1024, 1024) == 768
    assert connection_cap(1024, 256) == 192
    assert connection_cap(10, 256) == 10
    assert connection_cap(1024, 1) == 1


def test_accept_errors_are_one_line_a_second_and_the_rest_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.new_event_loop()
    try:
        seen: list[dict] = []
        loop.set_exception_handler(lambda _loop, context: seen.append(context))
        now = [100.0]
        handle = quiet_accept_errors(loop, clock=lambda: now[0])
        emfile = OSError(errno.EMFILE, "Too many open files")
        with caplog.at_level(logging.WARNING, logger="bridge.server"):
            for step in range(300):  # three seconds of failing accepts, 100 a second
                now[0] = 100.0 + step / 100
                handle(loop, {"message": "socket.accept() out of system resource",
                              "exception": emfile})  # fmt: skip
        lines = [r for r in caplog.records if r.name == "bridge.server"]
        assert len(lines) == 3
        assert all(r.exc_info is None and "Too many open files" in r.getMessage() for r in lines)
        assert "99 more" in lines[1].getMessage()
        # Anything else goes to the handler that was there before.
        other = {"message": "boom", "exception": ValueError("x")}
        handle(loop, other)
        assert seen == [other]
    finally:
        loop.close()


@pytest.mark.parametrize("factory", ["asyncio", "uvloop"])
def test_a_socket_closed_before_its_late_writer_is_one_debug_line(
    factory: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker client registering a socket's writer with `call_soon_threadsafe` after the
    broker dropped it (aiomqtt does, over paho): one debug line, no ERROR and no traceback."""
    if factory == "uvloop":
        loop = pytest.importorskip("uvloop", reason="uvloop is not installed").new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        seen: list[dict] = []
        loop.set_exception_handler(lambda _loop, context: seen.append(context))
        loop.set_exception_handler(quiet_accept_errors(loop))
        a, b = socket.socketpair()
        # A descriptor number nothing opened later takes (the lowest free one is reused).
        fd = os.dup2(a.fileno(), 900)
        a.close()
        b.close()
        loop.call_soon_threadsafe(loop.add_writer, fd, lambda: None)
        os.close(fd)
        with caplog.at_level(logging.DEBUG, logger="bridge.server"):
            loop.run_until_complete(asyncio.sleep(0.01))
        lines = [r for r in caplog.records if r.name == "bridge.server"]
        assert seen == [] and len(lines) == 1, (seen, lines)
        assert lines[0].levelno == logging.DEBUG and lines[0].exc_info is None
        assert "registered" in lines[0].getMessage()
    finally:
        loop.close()


def test_the_heap_is_frozen_once_the_daemon_is_ready() -> None:
    gc.unfreeze()
    try:
        freeze_heap(None)  # type: ignore[arg-type]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_event_loop_is_uvloop_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed")
    assert event_loop_factory() is uvloop.new_event_loop


class _Recorded:
    """A transport that keeps what is written (the unit under test is the cycle's send)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True


def _cycle(method: str, *, keep_alive: bool = True) -> tuple[OneWriteCycle, _Recorded]:
    from uvicorn.protocols.http.flow_control import FlowControl

    transport = _Recorded()
    cycle = OneWriteCycle(
        scope={"type": "http", "method": method, "path": "/", "headers": []},  # type: ignore[typeddict-item]
        transport=transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test"),
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: None,
    )
    return cycle, transport


async def _answer(cycle: OneWriteCycle, *bodies: bytes, length: int | None = None) -> None:
    headers = [(b"content-length", b"%d" % length)] if length is not None else []
    await cycle.send({"type": "http.response.start", "status": 202, "headers": headers})
    for i, body in enumerate(bodies):
        more = i < len(bodies) - 1
        await cycle.send({"type": "http.response.body", "body": body, "more_body": more})


def test_an_answer_goes_out_in_one_write_head_and_body() -> None:
    cycle, transport = _cycle("POST")
    asyncio.run(_answer(cycle, b'{"id": "x"}', length=11))
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 202 Accepted\r\n") and b"content-length: 11" in head
    assert body == b'{"id": "x"}'
    assert cycle.response_complete


def test_a_streamed_answer_sends_its_head_with_the_first_chunk_then_each_chunk() -> None:
    cycle, transport = _cycle("GET")
    asyncio.run(_answer(cycle, b"one", b"two"))
    assert len(transport.writes) == 2  # the head with the first chunk, then the last chunk
    assert transport.writes[0].startswith(b"HTTP/1.1 202") and transport.writes[0].endswith(
        b"\r\n\r\n3\r\none\r\n"
    )
    assert b"".join(transport.writes).endswith(b"3\r\ntwo\r\n0\r\n\r\n")


def test_a_head_answer_and_a_closing_answer_still_send_their_head() -> None:
    cycle, transport = _cycle("HEAD")
    asyncio.run(_answer(cycle, b"", length=5))
    assert len(transport.writes) == 1 and transport.writes[0].endswith(b"\r\n\r\n")
    cycle, transport = _cycle("POST", keep_alive=False)
    asyncio.run(_answer(cycle, b"", length=0))
    assert len(transport.writes) == 1 and b"connection: close" in transport.writes[0]
    assert transport.closed


def test_the_guarded_protocol_answers_through_the_one_write_cycle() -> None:
    import httpx
    import uvicorn

    from bridge.daemon.server import Limits, guarded_protocol

    seen: list[type] = []

    async def app(scope: dict, receive: object, send: object) -> None:
        seen.append(type(send.__self__))  # type: ignore[attr-defined]
        await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                    "headers": [(b"content-length", b"2")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

    async def main() -> httpx.Response:
        limits = Limits(10, 5.0, 5.0, 5.0, 16384)
        sock = bind("127.0.0.1", 0)
        config = uvicorn.Config(app, log_config=None, lifespan="off", http=guarded_protocol(limits))
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            for _ in range(500):  # bounded: the server starts in well under 5 s
                if server.started:
                    break
                await asyncio.sleep(0.01)
            port = sock.getsockname()[1]
            async with httpx.AsyncClient() as client:
                return await client.post(f"http://127.0.0.1:{port}/", content=b"x")
        finally:
            server.should_exit = True
            await serving
            sock.close()

    answer = asyncio.run(main())
    assert answer.status_code == 200 and answer.content == b"ok"
    assert seen == [OneWriteCycle]

"""Which HTTP client should deliver? POSTs per second to a loopback receiver, per client.

Starts a bare Starlette app on uvicorn (answers 204) in a subprocess, then sends the same
number of 1 KiB POSTs with 64 in flight through aiohttp's client and through httpx's
AsyncClient, and prints requests per second for each. Run: .venv/bin/python
bench/delivery_client.py [REQUESTS]. The result chose aiohttp (see bridge/deliver/worker.py).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import aiohttp
import httpx

CONCURRENCY = 64
BODY = b"x" * 1024
SERVER = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
async def hook(request):
    await request.body()
    return Response(status_code=204)
app = Starlette(routes=[Route("/", hook, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_aiohttp(url: str, n: int) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> None:
            async with session.post(url, data=BODY, allow_redirects=False) as resp:
                await resp.read()

        return await _loop(one, n)


async def run_httpx(url: str, n: int) -> float:
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, follow_redirects=False) as client:

        async def one() -> None:
            await client.post(url, content=BODY)

        return await _loop(one, n)


async def _loop(one, n: int) -> float:  # type: ignore[no-untyped-def]
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return n / (time.perf_counter() - started)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/"
        for name, fn in (("aiohttp", run_aiohttp), ("httpx", run_httpx)):
            asyncio.run(fn(url, 200))  # warm up
            rate = asyncio.run(fn(url, n))
            print(f"{name:8s} {rate:8.0f} req/s")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()

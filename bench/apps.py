"""The helper servers the benchmarks start as subprocesses, each on 127.0.0.1.

    python -m bench.apps sink --port P [--record]     a bare Starlette app answering 204
    python -m bench.apps upstream --port P [--big N]  an API for polled sources

The sink is both the ingest baseline (nothing recorded) and the loopback receiver of
deliveries (`--record`: it notes when each body arrived and the `seq` found in it). The
upstream serves small unchanging lists at `/items/NAME` (with ETags) and one list of N items
at `/big` of which 1% changes on every request; it logs when each request arrived, so
scheduling lag can be read from its side. Times are `time.monotonic_ns()`, which on Linux is
one clock for every process of the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def find_seq(value: Any, depth: int = 0) -> int | None:
    """The integer `seq` in a JSON body, looking into `data`-like nesting a few levels down."""
    if depth > 4 or not isinstance(value, dict):
        return None
    seq = value.get("seq")
    if isinstance(seq, int):
        return seq
    for child in value.values():
        if isinstance(child, dict) and (found := find_seq(child, depth + 1)) is not None:
            return found
    return None


def sink_app(record: bool) -> Starlette:
    """The bare app: 204 to every POST; with `record`, note each arrival."""
    arrivals: list[tuple[int, int]] = []
    seen: set[str] = set()
    state = {"requests": 0}

    async def receive(request: Request) -> Response:
        body = await request.body()
        if record:
            at_ns = time.monotonic_ns()
            state["requests"] += 1
            key = request.headers.get("webhook-id") or str(state["requests"])
            if key not in seen:
                seen.add(key)
                try:
                    seq = find_seq(json.loads(body))
                except ValueError:
                    seq = None
                arrivals.append((-1 if seq is None else seq, at_ns))
        return Response(status_code=204)

    async def stats(request: Request) -> Response:
        out: dict[str, Any] = {"unique": len(seen), "requests": state["requests"]}
        # When the first and the last new delivery arrived: a rate from the receiver's side.
        out["first_ns"] = arrivals[0][1] if arrivals else None
        out["last_ns"] = arrivals[-1][1] if arrivals else None
        if request.query_params.get("arrivals"):
            out["arrivals"] = arrivals
        return JSONResponse(out)

    async def reset(request: Request) -> Response:
        arrivals.clear()
        seen.clear()
        state["requests"] = 0
        return Response(status_code=204)

    async def health(request: Request) -> Response:
        return Response("ok")

    return Starlette(
        routes=[
            Route("/_health", health),
            Route("/_stats", stats),
            Route("/_reset", reset, methods=["POST"]),
            Route("/{path:path}", receive, methods=["POST"]),
        ]
    )


def revision(item: int, generation: int) -> int:
    """How often item `item` has changed by `generation`: once every 100 generations.

    Generation g changes exactly the items with id % 100 == g % 100, so each new generation
    differs from the one before in 1% of the items.
    """
    r = item % 100
    return (generation - r + 100) // 100 - (1 if r == 0 else 0)


def big_items(count: int, generation: int) -> list[dict[str, Any]]:
    """`count` items as they stand at `generation`."""
    return [
        {
            "id": i,
            "name": f"item {i}",
            "status": "open",
            "amount": i % 997,
            "rev": revision(i, generation),
        }
        for i in range(count)
    ]


def upstream_app(big: int) -> Starlette:
    """Small stable lists per name (ETag, 304) and one big list changing 1% per request."""
    log: list[tuple[str, int]] = []
    state = {"generation": 0}
    small = json.dumps({"items": [{"id": 1, "v": 1}, {"id": 2, "v": 1}]}).encode()
    small_etag = '"' + hashlib.sha256(small).hexdigest()[:16] + '"'

    async def items(request: Request) -> Response:
        log.append((request.path_params["name"], time.monotonic_ns()))
        if request.headers.get("if-none-match") == small_etag:
            return Response(status_code=304, headers={"etag": small_etag})
        return Response(small, media_type="application/json", headers={"etag": small_etag})

    async def big_list(request: Request) -> Response:
        log.append(("big", time.monotonic_ns()))
        body = json.dumps({"items": big_items(big, state["generation"])}).encode()
        state["generation"] += 1
        return Response(body, media_type="application/json")

    # /changing: `big` items of which 10 change on every request, each with `updated_at`
    # (milliseconds); `?since=MS` answers only the items updated at or after it.
    changing = {i: 0 for i in range(big)}
    clock = {"ms": 0}

    async def changing_list(request: Request) -> Response:
        log.append(("changing", time.monotonic_ns()))
        # Each request is at least a second after the last one, and never behind the clock.
        clock["ms"] = max(clock["ms"] + 1000, int(time.time() * 1000))
        for i in range(10):
            changing[(clock["ms"] // 1000 * 10 + i) % big] = clock["ms"]
        since = request.query_params.get("since")
        floor = int(since) if since and since.isdigit() else None
        rows = [
            {"id": i, "name": f"item {i}", "status": "open", "amount": i % 997, "updated_at": at}
            for i, at in changing.items()
            if floor is None or at >= floor
        ]
        body = json.dumps({"items": rows}).encode()
        return Response(body, media_type="application/json")

    async def requests(request: Request) -> Response:
        out = {"requests": log[:], "generation": state["generation"]}
        if request.query_params.get("clear"):
            log.clear()
        return JSONResponse(out)

    async def health(request: Request) -> Response:
        return Response("ok")

    return Starlette(
        routes=[
            Route("/_health", health),
            Route("/_log", requests),
            Route("/items/{name}", items),
            Route("/big", big_list),
            Route("/changing", changing_list),
        ]
    )


def main() -> None:
    """Serve one of the apps until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.apps")
    parser.add_argument("app", choices=["sink", "upstream"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--big", type=int, default=100_000)
    args = parser.parse_args()
    app = sink_app(args.record) if args.app == "sink" else upstream_app(args.big)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=2048,
    )


if __name__ == "__main__":
    main()

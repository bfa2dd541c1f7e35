"""The baseline poller: N plain aiohttp loops on a fixed grid, nothing else.

    python -m bench.bare_poller --base URL --sources N --every S --duration D

Each source `src-i` is asked at `start + phase_i + k * every` (phases spread evenly over one
interval) with `If-None-Match`, for `duration` seconds; the upstream's request log then
gives its scheduling lag exactly as it gives the bridge's. Prints its own CPU seconds as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

import aiohttp


async def poll_forever(
    session: aiohttp.ClientSession, url: str, first: float, every_s: float, end: float
) -> None:
    """GET `url` at first, first + every, ... until `end`."""
    etag = ""
    k = 0
    while (due := first + k * every_s) < end:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        headers = {"if-none-match": etag} if etag else {}
        async with session.get(url, headers=headers) as resp:
            await resp.read()
            etag = resp.headers.get("etag", etag)
        k += 1


async def run(base: str, sources: int, every_s: float, duration_s: float) -> None:
    start = time.monotonic() + 0.5
    end = start + duration_s
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    poll_forever(
                        session, f"{base}src-{i}", start + every_s * i / sources, every_s, end
                    )
                    for i in range(sources)
                )
            ),
            timeout=duration_s + 30,
        )


def main() -> None:
    """Poll for the given duration, then print CPU use as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare_poller")
    parser.add_argument("--base", required=True)
    parser.add_argument("--sources", type=int, required=True)
    parser.add_argument("--every", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    args = parser.parse_args()
    asyncio.run(run(args.base, args.sources, args.every, args.duration))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"cpu_s": usage.ru_utime + usage.ru_stime}))


if __name__ == "__main__":
    main()

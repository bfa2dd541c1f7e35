"""poll diff: one source of 100,000 items with 1% changed on every poll.

The daemon polls a local upstream whose big list changes 1% per request; a thread samples
the daemon's CPU (from /proc) every 10 ms, and the upstream's request log says when each
poll began, so CPU per poll is the CPU between the start of poll 2 (after the baseline poll)
and the start of poll 2 + K, over K. Peak RSS is the daemon's VmHWM. The baseline is
`bench.bare_diff` in its own process: fetch, parse and compare every item, nothing else,
measured with resource.getrusage.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from bench.context import Context, require_engine
from bench.procs import (
    BenchError,
    CpuSampler,
    child_env,
    get_json,
    peak_rss_mb,
    start_app,
    start_daemon,
)
from bench.stats import Goal, Row


def poll_yaml(url: str, every_s: float) -> str:
    """One polled source `big` over the upstream's list."""
    return (
        "sources:\n  big:\n    poll:\n"
        f"      url: {url}\n      every: {every_s:g}s\n      timeout: 120s\n"
        "      items: items\n      id: id\n"
    )


def big_request_times(upstream_url: str) -> list[int]:
    """When each request for /big arrived (monotonic ns), in order."""
    return sorted(t for name, t in get_json(upstream_url + "/_log")["requests"] if name == "big")


def run(ctx: Context) -> list[Row]:
    """The bare diff in a subprocess, then the daemon polling the same upstream."""
    require_engine("poll", "the polling engine")
    s = ctx.settings
    polls = s.poll_diff_polls
    work = ctx.workdir("poll-diff")
    with start_app(work, "upstream", "--big", str(s.poll_items)) as upstream:
        done = subprocess.run(
            [sys.executable, "-m", "bench.bare_diff", "--url", upstream.url + "/big",
             "--polls", str(polls)],
            capture_output=True, text=True, timeout=300, check=True, env=child_env(),
        )  # fmt: skip
        bare = json.loads(done.stdout)
        get_json(upstream.url + "/_log?clear=1")
        with start_daemon(work, poll_yaml(upstream.url + "/big", s.poll_diff_every_s)) as bridge:
            with CpuSampler(bridge.pid) as cpu:
                deadline = time.monotonic() + (polls + 2) * s.poll_diff_every_s + 180
                while len(times := big_request_times(upstream.url)) < polls + 2:
                    bridge.check_alive()
                    if time.monotonic() > deadline:
                        raise BenchError(f"the daemon made {len(times)} polls of {polls + 2}")
                    time.sleep(0.05)
                # Poll 1 + polls is finished once the next one began (or nearly: let it end).
                time.sleep(0.05)
            per_poll_s = (cpu.at(times[polls + 1]) - cpu.at(times[1])) / polls
            rss_mb = peak_rss_mb(bridge.pid)
            bridge.check_alive()
    items = f"{s.poll_items:,} items, 1% changed"
    return [
        Row("poll diff", f"CPU per poll ({items})", "s", per_poll_s, bare["cpu_s_per_poll"],
            "bare fetch+parse+compare", Goal("value", "<", 0.5, "s"),
            extra={"bare": bare, "polls": polls}),
        Row("poll diff", "peak RSS", "MB", rss_mb, bare["peak_rss_mb"],
            "bare fetch+parse+compare", Goal("value", "<", 300, "MB")),
    ]  # fmt: skip

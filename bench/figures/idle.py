"""idle cost: CPU of the daemon polling 100 sources where nothing changes, % of one core.

Measured from /proc/PID/stat over a window that starts once every source has been polled
once (the first poll stores the baseline; later ones find nothing new). The baseline is
`bench.bare_poller` doing the same requests at the same interval, measured over the same
window at the same time (both are nearly idle, so they hardly disturb each other).
"""

from __future__ import annotations

import subprocess
import time

from bench.context import Context, require_engine
from bench.figures.poll_scale import bare_poller, sources_yaml
from bench.procs import child_env, cpu_seconds, start_app, start_daemon
from bench.stats import Goal, Row


def run(ctx: Context) -> list[Row]:
    """Both pollers side by side; CPU over the same window."""
    require_engine("poll", "the polling engine")
    s = ctx.settings
    count, every_s, window_s = s.idle_sources, s.idle_every_s, s.idle_window_s
    work = ctx.workdir("idle")
    with start_app(work, "upstream", "--big", "1") as upstream:
        base = upstream.url + "/items/"
        with start_daemon(work, sources_yaml(base, count, every_s, "idle")) as bridge:
            argv = bare_poller(base, count, every_s, every_s + window_s + 3)
            bare = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env()
            )
            try:
                time.sleep(every_s + 1.5)  # every source of both polled once
                bridge.check_alive()
                b0, p0, t0 = cpu_seconds(bridge.pid), cpu_seconds(bare.pid), time.monotonic()
                time.sleep(window_s)
                b1, p1, t1 = cpu_seconds(bridge.pid), cpu_seconds(bare.pid), time.monotonic()
                bridge.check_alive()
            finally:
                bare.kill()
                bare.wait(timeout=10)
    bridge_pct = (b1 - b0) / (t1 - t0) * 100
    bare_pct = (p1 - p0) / (t1 - t0) * 100
    return [
        Row("idle cost", f"CPU, {count} sources every {every_s:g} s, nothing changing",
            "% core", bridge_pct, bare_pct, "bare aiohttp loops", Goal("ratio", "<=", 2.0),
            extra={"window_s": t1 - t0}),
    ]  # fmt: skip

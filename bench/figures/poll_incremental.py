"""poll incremental: a 100,000-item source where 10 items change per poll, both ways.

The same local upstream (`/changing`) serves every item, or with `?since=MS` only those
updated since. The daemon polls it once as a `snapshot` source (every item at each poll)
and once as an `incremental` source (a watermark on `updated_at`); per poll it records
requests and bytes in its poll stats, and a thread samples its CPU (from /proc). CPU per
poll is the CPU between the start of the second poll (after the baseline) and the start of
poll 2 + K, over K; for the incremental source, less what the same daemon spends in as long
without polling (measured in the same run: timers, outbox scans), so that the figure is the
poll's own cost. The snapshot source is the baseline of each ratio.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.context import Context, require_engine
from bench.procs import BenchError, CpuSampler, get_json, start_app, start_daemon
from bench.stats import Goal, Row

SNAPSHOT = "      items: items\n      id: id\n"
INCREMENTAL = (
    SNAPSHOT + "      mode: incremental\n"
    "      cursor: {field: updated_at, param: since, format: unix_ms, lookback: 0s}\n"
)


def _yaml(url: str, every_s: float, mode: str) -> str:
    return (
        "sources:\n  changing:\n    poll:\n"
        f"      url: {url}\n      every: {every_s:g}s\n      timeout: 120s\n" + mode
    )


def _request_times(upstream_url: str) -> list[int]:
    log = get_json(upstream_url + "/_log?clear=1")["requests"]
    return sorted(t for name, t in log if name == "changing")


def _stats(db: Path) -> tuple[int, int, int]:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT polls, requests, bytes FROM poll_state").fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def _measure(
    ctx: Context, upstream_url: str, mode: str, name: str, polls: int, every_s: float
) -> dict[str, Any]:
    """Poll the upstream `polls` + 2 times; per poll after the baseline: CPU, requests, bytes."""
    work = ctx.workdir(f"poll-incremental-{name}")
    _request_times(upstream_url)
    with start_daemon(work, _yaml(upstream_url + "/changing", every_s, mode), name=name) as bridge:
        with CpuSampler(bridge.pid) as cpu:
            deadline = time.monotonic() + (polls + 3) * every_s + 180
            times: list[int] = []
            start = (0, 0, 0)
            while True:
                bridge.check_alive()
                times += _request_times(upstream_url)
                if len(times) >= 2 and start == (0, 0, 0):
                    start = _stats(work / f"{name}.db")  # the baseline poll has committed
                if len(times) >= polls + 2:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"the daemon made {len(times)} polls of {polls + 2}")
                time.sleep(0.02)
            time.sleep(every_s / 2)  # let the last counted poll commit its stats
        end = _stats(work / f"{name}.db")
    counted = end[0] - start[0]
    if counted <= 0:
        raise BenchError("no poll committed after the baseline")
    return {
        "cpu_s": (cpu.at(times[polls + 1]) - cpu.at(times[1])) / polls,
        "requests": (end[1] - start[1]) / counted,
        "bytes": (end[2] - start[2]) / counted,
    }


def _idle_cpu_per_s(ctx: Context, upstream_url: str, window_s: float) -> float:
    """The CPU seconds per second of the same daemon when it does not poll (after its first
    poll, the next is an hour away): what every poll's share of the span includes anyway."""
    work = ctx.workdir("poll-incremental-idle")
    _request_times(upstream_url)
    with start_daemon(
        work, _yaml(upstream_url + "/changing", 3600, INCREMENTAL), name="idle"
    ) as bridge:
        deadline = time.monotonic() + 60
        while not _request_times(upstream_url):
            bridge.check_alive()
            if time.monotonic() > deadline:
                raise BenchError("the idle daemon never polled")
            time.sleep(0.02)
        time.sleep(1.0)  # its first poll commits
        with CpuSampler(bridge.pid) as cpu:
            began = time.monotonic_ns()
            time.sleep(window_s)
            ended = time.monotonic_ns()
        return (cpu.at(ended) - cpu.at(began)) / ((ended - began) / 1e9)


def run(ctx: Context) -> list[Row]:
    """The snapshot source, then the incremental one, on the same upstream."""
    require_engine("poll", "the polling engine")
    s = ctx.settings
    polls = s.poll_incremental_polls
    with start_app(ctx.workdir("poll-incremental"), "upstream", "--big", str(s.poll_items)) as up:
        # A snapshot poll of 100,000 items takes most of a second: poll it as poll-diff does;
        # the incremental source at a short interval, so that idle time adds little CPU.
        snapshot = _measure(ctx, up.url, SNAPSHOT, "snapshot", s.poll_diff_polls,
                            s.poll_diff_every_s)  # fmt: skip
        incremental = _measure(ctx, up.url, INCREMENTAL, "incremental", polls, 0.5)
        idle_per_s = _idle_cpu_per_s(ctx, up.url, polls * 0.5)
    # What a poll costs beyond what the daemon spends anyway in the 0.5 s between two polls.
    incremental["cpu_gross_s"] = incremental["cpu_s"]
    incremental["idle_cpu_per_s"] = idle_per_s
    incremental["cpu_s"] = max(0.0, incremental["cpu_s"] - idle_per_s * 0.5)
    what = f"{s.poll_items:,} items, 10 changed per poll"
    return [
        Row("poll incremental", f"bytes per poll ({what})", "B", incremental["bytes"],
            snapshot["bytes"], "snapshot", Goal("ratio", "<=", 0.02),
            extra={"snapshot": snapshot, "incremental": incremental, "polls": polls}),
        Row("poll incremental", "requests per poll", "", incremental["requests"],
            snapshot["requests"], "snapshot"),
        Row("poll incremental", "CPU per poll (less the idle daemon's)", "ms",
            incremental["cpu_s"] * 1000,
            snapshot["cpu_s"] * 1000, "snapshot", Goal("value", "<", 10, "ms")),
    ]  # fmt: skip

"""poll scale: 1,000 sources every 10 s against a local upstream: scheduling lag p50 and p99.

The upstream logs when each source's request arrived; a source first asked at t0 should be
asked again at t0 + k * 10 s, and the lag of each repeat is how late it came
(`stats.schedule_lags_s`). The baseline is `bench.bare_poller`: 1,000 plain aiohttp loops on
a fixed grid, read from the same log the same way.
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.context import Context, require_engine
from bench.procs import BenchError, child_env, get_json, start_app, start_daemon
from bench.stats import Goal, Row, latency_summary_ms, schedule_lags_s


def sources_yaml(base: str, count: int, every_s: float, prefix: str) -> str:
    """`count` polled sources PREFIX-i, each over its own small list at BASE + name."""
    lines = ["sources:"]
    for i in range(count):
        lines += [
            f"  {prefix}-{i}:",
            "    poll:",
            f"      url: {base}{prefix}-{i}",
            f"      every: {every_s:g}s",
            "      items: items",
            "      id: id",
        ]
    return "\n".join(lines) + "\n"


def bare_poller(base: str, sources: int, every_s: float, duration_s: float) -> list[str]:
    """The argv of the baseline poller."""
    return [
        sys.executable, "-m", "bench.bare_poller", "--base", base, "--sources", str(sources),
        "--every", f"{every_s:g}", "--duration", f"{duration_s:g}",
    ]  # fmt: skip


def lags_of(upstream_url: str, every_s: float) -> list[float]:
    """The scheduling lags in the upstream's log so far; clears the log."""
    log = get_json(upstream_url + "/_log?clear=1")["requests"]
    return schedule_lags_s(((name, t) for name, t in log), every_s)


def run(ctx: Context) -> list[Row]:
    """The bare poller for the window, then the daemon for the same window."""
    require_engine("poll", "the polling engine")
    s = ctx.settings
    count, every_s, window_s = s.scale_sources, s.scale_every_s, s.scale_window_s
    work = ctx.workdir("poll-scale")
    with start_app(work, "upstream", "--big", "1") as upstream:
        base = upstream.url + "/items/"
        subprocess.run(bare_poller(base, count, every_s, window_s), check=True,
                       capture_output=True, timeout=window_s + 60, env=child_env())  # fmt: skip
        bare = lags_of(upstream.url, every_s)
        with start_daemon(work, sources_yaml(base, count, every_s, "src")) as bridge:
            end = time.monotonic() + window_s
            while time.monotonic() < end:
                bridge.check_alive()
                time.sleep(min(0.5, max(0.0, end - time.monotonic())))
            lags = lags_of(upstream.url, every_s)
            bridge.check_alive()
    if not lags:
        failures = bridge.log_path.read_text(errors="replace").count("poll failed")
        raise BenchError(
            f"no source was polled twice in {window_s:g} s "
            f"({failures} failed polls in the daemon's log)"
        )
    got, want = latency_summary_ms(lags), latency_summary_ms(bare)
    label = f"{count:,} sources every {every_s:g} s"
    return [
        Row("poll scale", f"lag p50 ({label})", "ms", got["p50_ms"], want.get("p50_ms"),
            "bare aiohttp loops", extra={"bridge": got, "bare": want}),
        Row("poll scale", "lag p99", "ms", got["p99_ms"], want.get("p99_ms"),
            "bare aiohttp loops", Goal("value", "<", 100, "ms")),
    ]  # fmt: skip

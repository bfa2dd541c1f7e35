"""poll scale: 1,000 sources every 10 s against a local upstream: scheduling lag p50 and p99.

The upstream logs when each source's request arrived; a source first asked at t0 should be
asked again at t0 + k * 10 s, and the lag of each repeat is how late it came
(`stats.schedule_lags_s`). The baseline is `bench.bare_poller`: 1,000 plain aiohttp loops on
a fixed grid, read from the same log the same way.

`poll-scale-10k` (full runs only, one window of 130 s) is the issue's scale: 10,000 sources
every 60 s in one process, the lag p99 and the daemon's CPU over the window in % of one core
(goal: under half a core). Its first polls spread over the first 60 s, so each source is
asked once more within the window. Its baseline is the bare poller at the same scale, for
the same window: its lag and its own CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.context import Context, require_engine
from bench.procs import (
    BenchError,
    NotAvailable,
    child_env,
    cpu_seconds,
    get_json,
    start_app,
    start_daemon,
)
from bench.stats import Goal, Row, latency_summary_ms, missed_lags_s, schedule_lags_s


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


@dataclass
class Lags:
    """Scheduling lags read from the upstream's log at the end of a window."""

    lags_s: list[float]
    missed: int  # repeats that were due and never came (their lag is a lower bound)
    never: int  # sources not polled at all

    @property
    def summary(self) -> dict[str, float]:
        return latency_summary_ms(self.lags_s)


def lags_of(upstream_url: str, every_s: float, sources: int) -> Lags:
    """The scheduling lags in the upstream's log so far, counting missed repeats; clears it."""
    end_ns = time.monotonic_ns()
    log = [(name, t) for name, t in get_json(upstream_url + "/_log?clear=1")["requests"]]
    missed = missed_lags_s(log, every_s, end_ns)
    never = sources - len({name for name, _ in log})
    return Lags(schedule_lags_s(log, every_s) + missed, len(missed), never)


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
        bare = lags_of(upstream.url, every_s, count)
        with start_daemon(work, sources_yaml(base, count, every_s, "src")) as bridge:
            end = time.monotonic() + window_s
            while time.monotonic() < end:
                bridge.check_alive()
                time.sleep(min(0.5, max(0.0, end - time.monotonic())))
            lags = lags_of(upstream.url, every_s, count)
            bridge.check_alive()
    failures = bridge.log_path.read_text(errors="replace").count("poll failed")
    if not lags.lags_s:
        raise BenchError(
            f"no source was polled twice in {window_s:g} s, {lags.never} never "
            f"({failures} failed polls in the daemon's log)"
        )
    got, want = lags.summary, bare.summary
    notes = []
    if lags.missed or lags.never:
        notes.append(
            f"{lags.missed} repeats due never came (counted as late as the window's end: "
            f"a lower bound), {lags.never} sources never polled"
        )
    if failures:
        notes.append(f"{failures} failed polls in the daemon's log")
    label = f"{count:,} sources every {every_s:g} s"
    return [
        Row("poll scale", f"lag p50 ({label})", "ms", got["p50_ms"], want.get("p50_ms"),
            "bare aiohttp loops", note="; ".join(notes), extra={"bridge": got, "bare": want}),
        Row("poll scale", "lag p99", "ms", got["p99_ms"], want.get("p99_ms"),
            "bare aiohttp loops", Goal("value", "<", 100, "ms")),
    ]  # fmt: skip


TEN_K, TEN_K_EVERY_S, TEN_K_WINDOW_S = 10_000, 60.0, 130.0


def run_10k(ctx: Context) -> list[Row]:
    """10,000 sources every 60 s for one window: lag p50/p99 and CPU in % of a core."""
    require_engine("poll", "the polling engine")
    if ctx.settings.quick:
        raise NotAvailable("full runs only (a 130 s window)")
    work = ctx.workdir("poll-scale-10k")
    with start_app(work, "upstream", "--big", "1") as upstream:
        base = upstream.url + "/items/"
        argv = bare_poller(base, TEN_K, TEN_K_EVERY_S, TEN_K_WINDOW_S)
        done = subprocess.run(argv, check=True, capture_output=True,
                              timeout=TEN_K_WINDOW_S + 90, env=child_env())  # fmt: skip
        bare_cpu = json.loads(done.stdout)["cpu_s"] / TEN_K_WINDOW_S
        bare = lags_of(upstream.url, TEN_K_EVERY_S, TEN_K)
        config = sources_yaml(base, TEN_K, TEN_K_EVERY_S, "src")
        # Reading a config of 10,000 sources takes the daemon several seconds.
        with start_daemon(work, config, log_level="warning", health_timeout_s=120) as bridge:
            get_json(upstream.url + "/_log?clear=1")
            cpu0, t0 = cpu_seconds(bridge.pid), time.monotonic()
            # The log's first request of each source sets its phase: clear it only once.
            end = t0 + TEN_K_WINDOW_S
            while time.monotonic() < end:
                bridge.check_alive()
                time.sleep(min(0.5, max(0.0, end - time.monotonic())))
            cpu = (cpu_seconds(bridge.pid) - cpu0) / (time.monotonic() - t0)
            lags = lags_of(upstream.url, TEN_K_EVERY_S, TEN_K)
            bridge.check_alive()
    if not lags.lags_s:
        raise BenchError(f"no source was polled twice in {TEN_K_WINDOW_S:g} s")
    got, want = lags.summary, bare.summary
    note = (
        f"{len(lags.lags_s) - lags.missed:,} repeats measured; {lags.missed} due never came"
        f" (counted as late as the window's end), {lags.never} sources never polled"
    )
    label = f"{TEN_K:,} sources every {TEN_K_EVERY_S:g} s"
    name = "bare aiohttp loops"
    return [
        Row("poll scale 10k", f"lag p50 ({label})", "ms", got["p50_ms"], want.get("p50_ms"),
            name, note=note, extra={"bridge": got, "bare": want}),
        Row("poll scale 10k", "lag p99", "ms", got["p99_ms"], want.get("p99_ms"), name,
            Goal("value", "<", 100, "ms")),
        Row("poll scale 10k", "CPU over the window", "% core", cpu * 100, bare_cpu * 100, name,
            Goal("value", "<", 50, "% core")),
    ]  # fmt: skip

"""The pure part of the benchmarks: percentiles, ratios, goals and the results document.

Nothing here touches a socket or a process, so `tests/test_bench.py` can check it in
milliseconds and it cannot rot while nobody runs `make bench`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SCHEMA = 1


def percentile(values: Iterable[float], pct: float) -> float:
    """The `pct`-th percentile (0..100) with linear interpolation between closest ranks."""
    data = sorted(values)
    if not data:
        raise ValueError("no values")
    if not 0 <= pct <= 100:
        raise ValueError("pct must be within 0..100")
    rank = (len(data) - 1) * pct / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return data[low] + (data[high] - data[low]) * (rank - low)


def ratio(value: float | None, baseline: float | None) -> float | None:
    """`value / baseline`, or None when either is missing or the baseline is not positive."""
    if value is None or baseline is None or baseline <= 0:
        return None
    return value / baseline


@dataclass(frozen=True)
class Goal:
    """A target for a figure: `value` or `ratio` compared with `limit` by `op`."""

    on: Literal["value", "ratio"]
    op: Literal["<", "<=", ">", ">="]
    limit: float
    unit: str = ""

    def describe(self) -> str:
        """The goal as a user reads it, e.g. `< 20 ms` or `>= 0.5x`."""
        unit = "x" if self.on == "ratio" else (f" {self.unit}" if self.unit else "")
        return f"{self.op} {self.limit:g}{unit}"

    def is_met(self, value: float | None, ratio_: float | None) -> bool | None:
        """True or False, or None when the number it needs is missing."""
        subject = ratio_ if self.on == "ratio" else value
        if subject is None:
            return None
        return {
            "<": subject < self.limit,
            "<=": subject <= self.limit,
            ">": subject > self.limit,
            ">=": subject >= self.limit,
        }[self.op]


@dataclass
class Row:
    """One measured figure: its value, the baseline taken in the same run, and the goal."""

    figure: str
    metric: str
    unit: str
    value: float | None = None
    baseline: float | None = None
    baseline_name: str = ""
    goal: Goal | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # The goal in words, for a row that could not be measured (it has no Goal to check).
    goal_text: str = ""
    # Of a row combined from several runs (`combine`): each run's value and ratio.
    values: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        """The value over the baseline; of several runs, the median of each run's ratio."""
        if self.ratios:
            return median(self.ratios)
        return ratio(self.value, self.baseline)

    @property
    def runs(self) -> int:
        """How many runs this row's value is the median of (1 for a single run)."""
        return max(1, len(self.values))

    @property
    def met(self) -> bool | None:
        """Whether the goal is met; None without a goal or without a number."""
        return self.goal.is_met(self.value, self.ratio) if self.goal else None

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON object (the shape of `results.json`'s `figures`)."""
        return {
            "figure": self.figure,
            "metric": self.metric,
            "unit": self.unit,
            "value": _rounded(self.value),
            "baseline": _rounded(self.baseline),
            "baseline_name": self.baseline_name,
            "ratio": _rounded(self.ratio),
            "goal": self.goal.describe() if self.goal else (self.goal_text or None),
            "goal_spec": asdict(self.goal) if self.goal else None,
            "met": self.met,
            "runs": self.runs,
            "value_min": _rounded(min(self.values)) if self.values else _rounded(self.value),
            "value_max": _rounded(max(self.values)) if self.values else _rounded(self.value),
            "ratio_min": _rounded(min(self.ratios)) if self.ratios else _rounded(self.ratio),
            "ratio_max": _rounded(max(self.ratios)) if self.ratios else _rounded(self.ratio),
            "note": self.note,
            "extra": self.extra,
        }


def median(values: Iterable[float]) -> float:
    """The middle value (the mean of the two middle ones for an even count)."""
    return percentile(values, 50)


def combine(runs: Sequence[Sequence[Row]]) -> list[Row]:
    """One row per figure and metric from several runs of the same figures.

    The value and the baseline are the medians over the runs that measured them, the ratio
    the median of each run's own ratio (a run's value and baseline were measured seconds
    apart, so their ratio is steadier than either); each run's value and ratio are kept for
    the spread. Notes that differ between runs are all kept, once each.
    """
    groups: dict[tuple[str, str], list[Row]] = {}
    for rows in runs:
        for row in rows:
            groups.setdefault((row.figure, row.metric), []).append(row)
    out = []
    for same in groups.values():
        first = same[0]
        values = [r.value for r in same if r.value is not None]
        baselines = [r.baseline for r in same if r.baseline is not None]
        ratios = [x for r in same if (x := r.ratio) is not None]
        notes = list(dict.fromkeys(r.note for r in same if r.note))
        out.append(
            Row(
                first.figure,
                first.metric,
                first.unit,
                median(values) if values else None,
                median(baselines) if baselines else None,
                first.baseline_name,
                first.goal,
                note=" | ".join(notes),
                extra={"runs": [r.extra for r in same]} if len(same) > 1 else first.extra,
                goal_text=first.goal_text,
                values=values,
                ratios=ratios,
            )
        )
    return out


def format_spread(values: Sequence[float] | None, suffix: str = "") -> str:
    """The range of several runs' values, `4,900-5,400`; '-' for fewer than two."""
    if not values or len(values) < 2:
        return "-"
    return f"{format_number(min(values))}-{format_number(max(values))}{suffix}"


def unavailable(figure: str, reason: str, goal_text: str = "") -> Row:
    """A row that says why a figure could not be measured in this run, and its goal."""
    return Row(figure, "-", "", note=f"not available: {reason}", goal_text=goal_text)


def latency_summary_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max of latencies given in seconds, in milliseconds."""
    if not latencies_s:
        return {}
    ms = [x * 1000 for x in latencies_s]
    return {
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "count": float(len(ms)),
    }


def results_document(
    rows: Sequence[Row], machine: dict[str, Any], *, quick: bool, started: str, duration_s: float
) -> dict[str, Any]:
    """The whole `results.json`: when, on what machine, and every row."""
    missed = [f"{r.figure} {r.metric}" for r in rows if r.met is False]
    return {
        "schema": SCHEMA,
        "date": started,
        "quick": quick,
        "duration_s": round(duration_s, 1),
        "machine": machine,
        "figures": [r.to_json() for r in rows],
        "missed": missed,
    }


def format_number(value: float | None, unit: str = "") -> str:
    """A number for the table: three significant digits, thousands separated."""
    if value is None:
        return "-"
    if value == 0:
        text = "0"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def schedule_lags_s(requests: Iterable[tuple[str, int]], every_s: float) -> list[float]:
    """Scheduling lag of each repeat poll, from (source, arrival monotonic ns) pairs.

    A poller that does not drift asks source S at `t0 + k * every_s` for k = 1, 2, ...,
    where t0 is S's first request; the lag of the k-th repeat is how late it came (0 when it
    came early: timers may fire a hair early). The first request of each source sets its
    phase and is not counted.
    """
    by_source: dict[str, list[int]] = {}
    for source, at_ns in requests:
        by_source.setdefault(source, []).append(at_ns)
    lags = []
    for times in by_source.values():
        times.sort()
        first = times[0]
        for k, at_ns in enumerate(times[1:], start=1):
            lags.append(max(0.0, (at_ns - first) / 1e9 - k * every_s))
    return lags


def pair_latencies_s(
    sent_ns: dict[int, int], arrivals: Iterable[tuple[int, int]]
) -> tuple[list[float], int]:
    """Latency of each arrival after its `seq` was sent; also how many sent never arrived.

    Arrivals of unknown or repeated `seq` are ignored (at-least-once may repeat one).
    """
    latencies = []
    arrived: set[int] = set()
    for seq, at_ns in arrivals:
        if seq in sent_ns and seq not in arrived:
            arrived.add(seq)
            latencies.append(max(0, at_ns - sent_ns[seq]) / 1e9)
    return latencies, len(set(sent_ns) - arrived)


def missed_lags_s(
    requests: Iterable[tuple[str, int]], every_s: float, end_ns: int, grace_s: float = 1.0
) -> list[float]:
    """Lower bounds of the lag of polls that were due but had not come by `end_ns`.

    For each source, the repeats due at `t0 + k * every_s` after its last request and at
    least `grace_s` before the end never arrived: each is at least `end - due` late.
    """
    first: dict[str, int] = {}
    count: dict[str, int] = {}
    for source, at_ns in requests:
        first[source] = min(at_ns, first.get(source, at_ns))
        count[source] = count.get(source, 0) + 1
    lags = []
    for source, t0 in first.items():
        k = count[source]  # the next repeat (k = 1 is the first one after t0)
        while (due_ns := t0 + round(k * every_s * 1e9)) <= end_ns - grace_s * 1e9:
            lags.append((end_ns - due_ns) / 1e9)
            k += 1
    return lags

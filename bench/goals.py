"""The performance goals of issue 29 as one table, read from a results document's rows.

Each goal names the row that measures it (figure and metric, as `bench/figures/` writes
them) and, where there is one, the row of the CPU each request or event cost, shown beside
it. A goal is held or not by the median of the runs; the spread is the min-max of the runs.
Pure: `tests/test_bench.py` checks it without running a benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.stats import Goal, format_number


@dataclass(frozen=True)
class IssueGoal:
    """One line of the goals table: what it promises, and the rows that measure it."""

    name: str
    figure: str  # the measuring row's figure (TITLES in bench/figures/__init__.py)
    metric: str  # the start of its metric
    goal: Goal
    cpu_metric: str | None = None  # the start of the metric of the CPU row, same figure


GOALS: tuple[IssueGoal, ...] = (
    IssueGoal(
        "ingest vs Debian's webhook (GitHub-signed; durable vs nowhere)",
        "ingest vs peer",
        "GitHub-signed accepted/s",
        Goal("ratio", ">=", 1.2),
        "CPU per accepted webhook",
    ),
    IssueGoal(
        "ingest vs bare Starlette (Standard Webhooks)",
        "ingest",
        "accepted/s",
        Goal("ratio", ">=", 0.65),
        "CPU per accepted webhook",
    ),
    IssueGoal(
        "CPU per accepted webhook",
        "ingest",
        "CPU per accepted webhook",
        Goal("value", "<=", 150, "µs"),
    ),
    IssueGoal(
        "delivery vs the bare aiohttp loop",
        "delivery",
        "events/s",
        Goal("ratio", ">=", 0.6),
        "CPU per delivered event",
    ),
    IssueGoal(
        "PostgreSQL delivery, one replica, vs the bare loop",
        "scale-out",
        "delivered/s, PostgreSQL, 1 replica",
        Goal("ratio", ">=", 0.45),
        "CPU per delivered event, PostgreSQL, 1 replica",
    ),
    IssueGoal(
        "end to end p99 at 200/s",
        "end to end",
        "p99 sent -> delivered",
        Goal("value", "<", 25, "ms"),
    ),
    IssueGoal(
        "end to end p99 at 200/s beside a disk-writing neighbour",
        "end to end, disk neighbour",
        "p99 sent -> delivered",
        Goal("value", "<", 50, "ms"),
    ),
)


def _find(rows: Sequence[dict[str, Any]], figure: str, metric: str) -> dict[str, Any] | None:
    """The row of `figure` whose metric starts with `metric`, or the row saying why the
    figure could not run (metric `-`), or None."""
    for row in rows:
        if row["figure"] == figure and row["metric"].startswith(metric):
            return row
    return next((r for r in rows if r["figure"] == figure and r["metric"] == "-"), None)


def _of(row: dict[str, Any], on: str) -> tuple[float | None, float | None, float | None]:
    """The median, min and max of a row's value or ratio."""
    return row.get(on), row.get(f"{on}_min"), row.get(f"{on}_max")


def goal_lines(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per goal: the median measured (ratio or value), its spread, the CPU beside
    it with its spread and baseline's, and whether the goal holds (None: not measured)."""
    out = []
    for goal in GOALS:
        row = _find(rows, goal.figure, goal.metric)
        line: dict[str, Any] = {
            "goal": goal.name,
            "wanted": goal.goal.describe(),
            "on": goal.goal.on,
            "unit": goal.goal.unit,
            "median": None,
            "min": None,
            "max": None,
            "runs": 0,
            "cpu": None,
            "held": None,
            "note": "not measured in this run",
        }
        if row is not None and row["metric"] != "-":
            median, low, high = _of(row, goal.goal.on)
            line.update(median=median, min=low, max=high, runs=row.get("runs", 1), note="")
            ratio = median if goal.goal.on == "ratio" else None
            value = median if goal.goal.on == "value" else None
            line["held"] = goal.goal.is_met(value, ratio)
        elif row is not None:
            line["note"] = row.get("note") or line["note"]
        cpu = _find(rows, goal.figure, goal.cpu_metric) if goal.cpu_metric else None
        if cpu is not None and cpu["metric"] != "-" and cpu.get("value") is not None:
            line["cpu"] = {
                "unit": cpu["unit"],
                "per": "ev" if "event" in cpu["metric"] else "req",
                "median": cpu["value"],
                "min": cpu.get("value_min"),
                "max": cpu.get("value_max"),
                "baseline": cpu.get("baseline"),
                "baseline_name": cpu.get("baseline_name", ""),
            }
        out.append(line)
    return out


def format_measured(line: dict[str, Any]) -> str:
    """`0.71x` or `142 µs`, the median of a goal line; '-' when not measured."""
    median = line["median"]
    if median is None:
        return "-"
    if line["on"] == "ratio":
        return f"{median:.2f}x"
    return format_number(median, line["unit"])


def format_range(line: dict[str, Any]) -> str:
    """The min-max of a goal line's runs, '-' for a single run."""
    low, high = line["min"], line["max"]
    if line["runs"] < 2 or low is None or high is None:
        return "-"
    if line["on"] == "ratio":
        return f"{low:.2f}x-{high:.2f}x"
    return f"{format_number(low)}-{format_number(high, line['unit'])}"


def format_cpu(line: dict[str, Any]) -> str:
    """The CPU beside a goal: `181 µs/req (170-190; webhook 120)`, '-' when none."""
    cpu = line["cpu"]
    if cpu is None:
        return "-"
    text = f"{format_number(cpu['median'])} {cpu['unit']}/{cpu['per']}"
    inner = []
    if cpu["min"] is not None and cpu["max"] is not None and cpu["min"] != cpu["max"]:
        inner.append(f"{format_number(cpu['min'])}-{format_number(cpu['max'])}")
    if cpu["baseline"] is not None:
        name = cpu["baseline_name"].split(",")[0] or "baseline"
        inner.append(f"{name} {format_number(cpu['baseline'])}")
    return text + (f" ({'; '.join(inner)})" if inner else "")


def format_held(held: bool | None) -> str:
    """`held`, `NOT held` or `-` (not measured)."""
    return {True: "held", False: "NOT held", None: "-"}[held]


def markdown_lines(lines: Sequence[dict[str, Any]]) -> list[str]:
    """The goals table in Markdown."""
    out = [
        "| goal (issue 29) | wanted | measured (median) | spread (min-max) | CPU beside it "
        "| held? |",
        "| --- | --- | ---: | ---: | --- | --- |",
    ]
    for line in lines:
        held = format_held(line["held"])
        out.append(
            f"| {line['goal']} | {line['wanted']} | {format_measured(line)} "
            f"| {format_range(line)} | {format_cpu(line)} "
            f"| {held if line['held'] is not False else '**not held**'} |"
        )
    return out

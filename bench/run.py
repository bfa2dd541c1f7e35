"""Run the benchmarks: `python -m bench [--quick] [--only NAME ...]`.

Each figure is measured against a baseline taken in the same run, on the same machine, a few
seconds apart, because the machine is shared and noisy: the ratio is what to read. The
table goes to the terminal, the rows and the machine to `bench/results.json` (quick runs:
`bench/results-quick.json`). `--markdown FILE` prints a results file as the table of
`docs/benchmarks.md`; `--docs FILE` puts it there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import machine
from bench.context import Context, Settings
from bench.figures import FIGURES, GOALS, TITLES
from bench.goals import (
    format_cpu,
    format_held,
    format_measured,
    format_range,
    goal_lines,
    markdown_lines,
)
from bench.procs import NotAvailable
from bench.stats import Row, combine, format_number, format_spread, results_document, unavailable

HERE = Path(__file__).resolve().parent
log = logging.getLogger("bench")


def run_figure(name: str, ctx: Context, console: Console) -> tuple[list[Row], bool]:
    """Run one figure; a figure that cannot run or fails becomes a row saying so."""
    console.print(f"[bold]{name}[/bold] ...", end=" ")
    started = time.monotonic()
    try:
        rows = FIGURES[name](ctx)
    except NotAvailable as exc:
        console.print(f"[yellow]not available[/yellow]: {exc}")
        return [unavailable(TITLES[name], str(exc), GOALS[name])], True
    except Exception as exc:
        console.print(f"[red]failed[/red]: {exc.__class__.__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)
        first = str(exc).splitlines()[0] if str(exc) else ""
        row = unavailable(TITLES[name], "", GOALS[name])
        row.note = f"failed: {exc.__class__.__name__}: {first}"
        return [row], False
    took = time.monotonic() - started
    console.print(f"done in {took:.1f} s")
    for row in rows:
        row.extra.setdefault("figure_s", round(took, 1))
    return rows, True


def format_ratio(value: float | None) -> str:
    """A ratio for the table: `0.61x`, `9.15x`, `6,018x`."""
    if value is None:
        return "-"
    return f"{value:,.0f}x" if value >= 100 else f"{value:.2f}x"


def _met(value: bool | None) -> str:
    return {True: "[green]yes[/green]", False: "[red]NO[/red]", None: "-"}[value]


def table(rows: list[dict[str, Any]], title: str) -> Table:
    """The rich table of a results document's rows."""
    out = Table(title=title, title_justify="left")
    columns = ("figure", "metric", "value", "spread", "baseline", "ratio", "ratio spread")
    for column in (*columns, "goal", "met?"):
        left = column in ("figure", "metric", "goal")
        out.add_column(column, justify="left" if left else "right")
    for r in rows:
        out.add_row(
            r["figure"],
            r["metric"] if r["metric"] != "-" else f"[yellow]{r['note']}[/yellow]",
            format_number(r["value"], r["unit"]),
            spread(r, "value"),
            format_number(r["baseline"], r["unit"]),
            format_ratio(r["ratio"]),
            spread(r, "ratio"),
            r["goal"] or "none set",
            _met(r["met"]),
        )
    return out


def goals_table(doc: dict[str, Any]) -> Table:
    """The rich table of issue 29's goals, each held or not in this run."""
    runs = max((r.get("runs", 1) for r in doc["figures"]), default=1)
    out = Table(
        title=f"issue 29's goals (median of {runs} run{'s' * (runs > 1)}; load shared)",
        title_justify="left",
    )
    for column in ("goal", "wanted", "measured", "spread", "CPU beside it", "held?"):
        out.add_column(column, justify="right" if column in ("measured", "spread") else "left")
    for line in goal_lines(doc["figures"]):
        held = format_held(line["held"])
        colour = {True: "green", False: "red", None: "dim"}[line["held"]]
        out.add_row(
            line["goal"],
            line["wanted"],
            format_measured(line) if line["median"] is not None else f"[dim]{line['note']}[/dim]",
            format_range(line),
            format_cpu(line),
            f"[{colour}]{held}[/{colour}]",
        )
    return out


def spread(r: dict[str, Any], of: str) -> str:
    """The min-max of a results row's value or ratio over its runs, '-' for one run."""
    low, high = r.get(f"{of}_min"), r.get(f"{of}_max")
    if r.get("runs", 1) < 2 or low is None or high is None:
        return "-"
    if of == "ratio":
        return f"{format_ratio(low)}-{format_ratio(high)}"
    return format_spread([low, high])


def markdown(doc: dict[str, Any]) -> str:
    """A results document as a Markdown table with its machine line."""
    m = doc["machine"]
    runs = max((r.get("runs", 1) for r in doc["figures"]), default=1)
    lines = [
        f"Measured {doc['date'][:16].replace('T', ' ')} UTC ({'quick' if doc['quick'] else 'full'}"
        f" run, each figure the median of {runs} run{'s' if runs > 1 else ''})"
        f" on {m['cores']} cores ({m['cpu']}),"
        f" Python {m['python']}, SQLite {m['sqlite']};"
        f" load average {m.get('load_1m', '?')} as it began (the machine is shared: read the"
        " ratios and the CPU per request).",
        "",
        *markdown_lines(goal_lines(doc["figures"])),
        "",
        "| figure | metric | value (median) | spread (min-max) | baseline (same run) | ratio "
        "| ratio spread | goal | met? |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in doc["figures"]:
        ratio = format_ratio(r["ratio"])
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        metric = r["metric"] if r["metric"] != "-" else r["note"]
        base = format_number(r["baseline"], r["unit"])
        if r["baseline_name"]:
            base += f" ({r['baseline_name']})"
        lines.append(
            f"| {r['figure']} | {metric} | {format_number(r['value'], r['unit'])} "
            f"| {spread(r, 'value')} | {base} | {ratio} | {spread(r, 'ratio')} "
            f"| {r['goal'] or 'none set'} | {met} |"
        )
    notes = [
        f"- {r['figure']}: {r['note']}" for r in doc["figures"] if r["note"] and r["metric"] != "-"
    ]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


START, END = "<!-- bench:start -->", "<!-- bench:end -->"
PAGE = HERE.parent / "docs" / "benchmarks.md"  # the page whose "Latest results" is the table


def replace_marked(text: str, table_md: str) -> str:
    """`text` with what lies between the bench markers replaced by `table_md`."""
    head, sep, rest = text.partition(START)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"{PAGE.relative_to(HERE.parent)} has no {START} ... {END} markers")
    return f"{head}{START}\n{table_md}\n{END}{tail}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="Shorter runs (under 2 minutes).")
    parser.add_argument("--only", nargs="+", choices=list(FIGURES), help="Run only these.")
    parser.add_argument(
        "--runs", type=int, help="Run every figure this many times (default 3; quick 1)."
    )
    parser.add_argument("--out", type=Path, help="Where to write the results JSON.")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch folder (logs).")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="Sample the daemon with py-spy into DIR."
    )
    parser.add_argument(
        "--markdown", type=Path, metavar="FILE", help="Print FILE (results JSON) as Markdown."
    )
    parser.add_argument(
        "--docs",
        "--readme",  # its name when the table was in the README
        dest="docs",
        type=Path,
        metavar="FILE",
        help="Put FILE (results JSON) as the table in docs/benchmarks.md between its markers.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the figures asked for; print the table; write the results. Exit 1 if one failed."""
    args = parse_args(argv)
    if args.markdown or args.docs:
        source = args.markdown or args.docs
        try:
            rendered = markdown(json.loads(source.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"python -m bench: {source} is not a results file ({exc})", file=sys.stderr)
            return 2
        if args.markdown:
            print(rendered)
        else:
            PAGE.write_text(replace_marked(PAGE.read_text(), rendered))
        return 0
    console = Console(width=160)
    settings = Settings.quick_run() if args.quick else Settings.full_run()
    out = args.out or HERE / ("results-quick.json" if args.quick else "results.json")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        os.environ["BENCH_PROFILE_DIR"] = str(args.profile.resolve())
    started = datetime.now(UTC)
    root = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    runs = args.runs or (1 if args.quick else 3)
    names = args.only or list(FIGURES)
    # Per figure, the rows of each run; the runs take turns, so that a noisy minute on the
    # machine falls on one run of several figures rather than on every run of one.
    by_figure: dict[str, list[list[Row]]] = {name: [] for name in names}
    all_ran = True
    clock = time.monotonic()
    try:
        for i in range(runs):
            ctx = Context(settings, root / f"run{i + 1}")
            for name in names:
                if runs > 1:
                    console.print(f"[dim]run {i + 1}/{runs}[/dim]", end=" ")
                got, ran = run_figure(name, ctx, console)
                by_figure[name].append(got)
                all_ran = all_ran and ran
    finally:
        if args.keep or not all_ran:
            console.print(f"scratch folder with the logs: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    rows = [row for name in names for row in combine(by_figure[name])]
    doc = results_document(
        rows,
        machine.describe(),
        quick=settings.quick,
        started=started.isoformat(timespec="seconds"),
        duration_s=time.monotonic() - clock,
    )
    doc["goals"] = goal_lines(doc["figures"])
    out.write_text(json.dumps(doc, indent=2) + "\n")
    console.print(table(doc["figures"], f"bridge benchmarks ({'quick' if args.quick else 'full'})"))
    console.print(goals_table(doc))
    if doc["missed"]:
        console.print("missed goals: " + "; ".join(doc["missed"]))
    console.print(f"written to {out} in {doc['duration_s']:.0f} s")
    return 0 if all_ran else 1

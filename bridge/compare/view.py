"""The latency report shown to people: rich tables for the terminal, a picture for files."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from rich.console import Console, Group
from rich.table import Table

from bridge.compare.report import LatencyReport, SourceReport, Spread
from bridge.errors import MissingExtra
from bridge.terminal import cell

log = logging.getLogger("bridge.report")

PLOT_SUFFIXES = (".png", ".svg")
# The status page's colours: orange for polled, blue for pushed.
_COLORS = {"poll": ("#d9822b", "#8c4a0b"), "push": ("#2b7bd9", "#0b3f8c")}


def format_ms(value: float | None) -> str:
    """A latency for people: `-` for none, `850 ms`, `2.41 s`, `3.2 min`."""
    if value is None:
        return "-"
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value < 1000:
        return f"{sign}{value:.0f} ms" if value >= 10 else f"{sign}{value:.1f} ms"
    if value < 60_000:
        return f"{sign}{value / 1000:.2f} s"
    return f"{sign}{value / 60_000:.1f} min"


def _spread_cells(s: Spread, keys: tuple[str, ...] = ("p50", "p90", "p99", "max")) -> list[str]:
    return [format_ms(getattr(s, key)) for key in keys]


def _poll_cells(source: SourceReport) -> list[str]:
    assert source.polls is not None
    polls = source.polls
    share = source.empty_share
    empty = f"{polls.empty_polls} ({share:.0%})" if share is not None else str(polls.empty_polls)
    per_event = source.bytes_per_event
    return [
        str(polls.requests),
        str(polls.not_modified),
        empty,
        f"{per_event:,.0f}" if per_event is not None else "-",
    ]


def sources_table(report: LatencyReport) -> Table:
    """Two rows per source and origin: detection and delivery latency percentiles."""
    table = Table(title="Latency per source", title_justify="left", box=None)
    table.add_column("source", no_wrap=True)
    for column in ("origin", "events", "latency"):
        table.add_column(column, justify="right" if column == "events" else "left")
    for key in ("p50", "p90", "p99", "max"):
        table.add_column(key, justify="right")
    for s in report.sources:
        table.add_row(
            cell(s.source), cell(s.origin), str(s.events), "detection", *_spread_cells(s.detection)
        )
        table.add_row("", "", "", "delivery", *_spread_cells(s.delivery), end_section=True)
    return table


def polling_table(report: LatencyReport) -> Table:
    """One row per polled source: what polling cost."""
    table = Table(title="What polling cost", title_justify="left", box=None)
    table.add_column("source", no_wrap=True)
    for column in ("requests", "304s", "empty polls", "bytes/event"):
        table.add_column(column, justify="right")
    for s in report.sources:
        if s.polls is not None:
            table.add_row(cell(s.source), *_poll_cells(s))
    return table


def pairs_table(report: LatencyReport) -> Table:
    """One row per compare pair: how many changes each path saw and how much earlier push was."""
    table = Table(
        title="Poll vs push (lead: how much earlier push saw a change)",
        title_justify="left",
        box=None,
    )
    for column in ("poll", "push"):
        table.add_column(column, no_wrap=True)
    for column in ("matched", "only poll", "only push"):
        table.add_column(column, justify="right")
    for key in ("p50", "p90", "max"):
        table.add_column(f"lead {key}", justify="right")
    for p in report.pairs:
        table.add_row(
            cell(p.poll),
            cell(p.push),
            str(p.matched),
            str(p.only_poll),
            str(p.only_push),
            *_spread_cells(p.push_lead, ("p50", "p90", "max")),
        )
    return table


def merges_table(report: LatencyReport) -> Table:
    """One row per merge: the changes each path saw and how much earlier push was, exactly."""
    table = Table(
        title="Merged push and poll (lead: how much earlier push recorded a change)",
        title_justify="left",
        box=None,
    )
    table.add_column("merge", no_wrap=True)
    for column in ("changes", "both", "only poll", "only push", "poll first"):
        table.add_column(column, justify="right")
    keys = ("p50", "p95", "max")
    for key in keys:
        table.add_column(f"lead {key}", justify="right")
    for m in report.merges:
        lead = m.to_dict()["push_lead_ms"]
        leads = [f"{lead[k] / 1000:.3g} s" if lead[k] is not None else "-" for k in keys]
        table.add_row(
            cell(m.merge),
            str(m.changes),
            str(m.both),
            str(m.only_poll),
            str(m.only_push),
            str(m.first_poll),
            *leads,
        )
    return table


def print_report(report: LatencyReport, console: Console | None = None) -> None:
    """Print the tables (the pairs one only when the config compares sources)."""
    console = console or Console()
    if not console.is_terminal:
        # Piped or captured: no terminal to fit, so do not squeeze the columns.
        console.width = max(console.width, 120)
    parts: list[Table] = [sources_table(report)]
    if any(s.polls is not None for s in report.sources):
        parts.append(polling_table(report))
    if report.pairs:
        parts.append(pairs_table(report))
    if report.merges:
        parts.append(merges_table(report))
    console.print(Group(*parts))


def has_plot() -> bool:
    """Whether matplotlib (the `plot` extra) is installed."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):  # a broken or blocked installation
        return False


def require_plot() -> None:
    """Raise `MissingExtra` unless matplotlib (the `plot` extra) is installed."""
    if not has_plot():
        raise MissingExtra("the latency picture", "matplotlib", "plot")


# What the report's words mean, one line each, for readers meeting them the first time.
MEANINGS = (
    "detection: from a change upstream to the bridge recording it (a poll finds it next time)",
    "delivery:  from the bridge recording an event to the target accepting it",
    "lead:      how much earlier push recorded a change than polling did",
)


def quiet_line(report: LatencyReport, source: str, seconds: float) -> str | None:
    """What polling `source`, whose list never changed, cost: its requests, all wasted."""
    found = next((s for s in report.sources if s.source == source and s.polls), None)
    if found is None or found.polls is None:
        return None
    polls = found.polls
    return (
        f"{source} never changed: {polls.requests} requests in {seconds:.0f} s, {polls.events}"
        f" events found ({polls.empty_polls} polls found nothing after the first,"
        f" {polls.not_modified} answered 304): requests a webhook would not have needed"
    )


# Latencies under this are drawn at it: a logarithmic axis has no zero.
FLOOR_MS = 1.0


def ecdf(samples_ms: tuple[int, ...] | list[int]) -> tuple[list[float], list[float]]:
    """The empirical CDF of `samples_ms`: sorted values (floored at FLOOR_MS) and, for each,
    the share of samples at most that value."""
    xs = sorted(max(float(v), FLOOR_MS) for v in samples_ms)
    n = len(xs)
    return xs, [(i + 1) / n for i in range(n)]


def interval_ms(source: SourceReport) -> float | None:
    """A polled source's poll interval in milliseconds, when its poll state tells it."""
    if source.polls is None or not source.polls.interval_s:
        return None
    return source.polls.interval_s * 1000


def caption(report: LatencyReport) -> str:
    """What the counts mean: per source, its events and how many of them are drawn."""
    parts = []
    for s in report.sources:
        drawn = len(s.samples_ms)
        part = f"{s.source} ({s.origin}): {drawn} of {s.events} events drawn"
        parts.append(part)
    return (
        "Each curve: the share of a source's events recorded within x of the upstream change."
        " Only events with an upstream time are drawn (deletions and events without a time"
        " carry none): " + "; ".join(parts) + "."
    )


def write_plot(report: LatencyReport, path: str | Path) -> Path:
    """Draw the detection latency of every polled and pushed source on one logarithmic time
    axis (each an empirical CDF, p50 marked, each poll interval drawn), as PNG or SVG by the
    file's suffix; returns the path written."""
    path = Path(path)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(f"{path.name}: the picture must end in .png or .svg")
    require_plot()
    import matplotlib

    matplotlib.use("Agg")  # no display: draw into files only
    from matplotlib import pyplot as plt

    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text in an SVG
        fig, ax = plt.subplots(figsize=(11, 6))
        fig.subplots_adjust(left=0.07, right=0.98, top=0.92, bottom=0.2)
        drawn = _draw_curves(ax, report)
        if not drawn:
            ax.text(0.5, 0.5, "no events with an upstream time", ha="center", va="center")
            ax.set_axis_off()
        fig.suptitle("bridge: how soon changes were seen, poll vs push")
        fig.text(0.01, 0.01, _wrap(caption(report)), fontsize="small", va="bottom")
        fig.savefig(path, format=path.suffix.lower().lstrip("."), dpi=110)
        plt.close(fig)
    log.info("wrote the latency picture to %s", path)
    return path


def _wrap(text: str, width: int = 150) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _draw_curves(ax: object, report: LatencyReport) -> bool:
    """One step curve per source with samples; returns whether any was drawn."""
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    drawn = False
    shade = {"poll": 0, "push": 0}
    for s in report.sources:
        if not s.samples_ms:
            continue
        colors = _COLORS.get(s.origin, _COLORS["push"])
        color = colors[shade.get(s.origin, 0) % 2]
        shade[s.origin] = shade.get(s.origin, 0) + 1
        xs, ys = ecdf(s.samples_ms)
        p50 = s.detection.p50
        label = f"{s.source} ({s.origin}, n={len(xs)}, p50 {format_ms(p50)})"
        ax.step(xs, ys, where="post", color=color, linewidth=2, label=label)
        if p50 is not None:
            x = max(p50, FLOOR_MS)
            ax.plot([x], [0.5], marker="o", color=color)
            ax.annotate(f"p50 {format_ms(p50)}", (x, 0.5), textcoords="offset points",
                        xytext=(6, -12), color=color, fontsize="small")  # fmt: skip
        every = interval_ms(s)
        if every is not None:
            ax.axvline(every, linestyle=":", linewidth=1.5, color=color)
            ax.annotate(f"{s.source} polls every {format_ms(every)}", (every, 0.02),
                        rotation=90, va="bottom", ha="right", color=color,
                        fontsize="small")  # fmt: skip
        drawn = True
    if drawn:
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.axhline(0.5, linewidth=0.5, color="#999999")
        ax.set_xlabel("time from the upstream change to the bridge recording it (log scale)")
        ax.set_ylabel("share of events seen")
        ax.xaxis.set_major_formatter(lambda value, _pos: format_ms(value))
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
    return drawn

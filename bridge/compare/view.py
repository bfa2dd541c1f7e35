"""The latency report shown to people: rich tables for the terminal, a picture for files."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from rich.console import Console, Group
from rich.table import Table

from bridge.compare.report import LatencyReport, SourceReport, Spread
from bridge.errors import MissingExtra

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
    table = Table(title="Latency per source", title_justify="left", pad_edge=False)
    table.add_column("source", no_wrap=True)
    for column in ("origin", "events", "latency"):
        table.add_column(column, justify="right" if column == "events" else "left")
    for key in ("p50", "p90", "p99", "max"):
        table.add_column(key, justify="right")
    for s in report.sources:
        table.add_row(s.source, s.origin, str(s.events), "detection", *_spread_cells(s.detection))
        table.add_row("", "", "", "delivery", *_spread_cells(s.delivery), end_section=True)
    return table


def polling_table(report: LatencyReport) -> Table:
    """One row per polled source: what polling cost."""
    table = Table(title="What polling cost", title_justify="left", pad_edge=False)
    table.add_column("source", no_wrap=True)
    for column in ("requests", "304s", "empty polls", "bytes/event"):
        table.add_column(column, justify="right")
    for s in report.sources:
        if s.polls is not None:
            table.add_row(s.source, *_poll_cells(s))
    return table


def pairs_table(report: LatencyReport) -> Table:
    """One row per compare pair: how many changes each path saw and how much earlier push was."""
    table = Table(
        title="Poll vs push (lead: how much earlier push saw a change)",
        title_justify="left",
        pad_edge=False,
    )
    for column in ("poll", "push"):
        table.add_column(column, no_wrap=True)
    for column in ("matched", "only poll", "only push"):
        table.add_column(column, justify="right")
    for key in ("p50", "p90", "max"):
        table.add_column(f"lead {key}", justify="right")
    for p in report.pairs:
        table.add_row(
            p.poll,
            p.push,
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
        pad_edge=False,
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
            m.merge,
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


def require_plot() -> None:
    """Raise `MissingExtra` unless matplotlib (the `plot` extra) is installed."""
    if importlib.util.find_spec("matplotlib") is None:
        raise MissingExtra("the latency picture", "matplotlib", "plot")


def write_plot(report: LatencyReport, path: str | Path) -> Path:
    """Draw the detection latency distributions of the polled and the pushed sources side by
    side, as PNG or SVG by the file's suffix; returns the path written."""
    path = Path(path)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(f"{path.name}: the picture must end in .png or .svg")
    require_plot()
    import matplotlib

    matplotlib.use("Agg")  # no display: draw into files only
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    for ax, origin, title in (
        (axes[0], "poll", "Polled: detection latency"),
        (axes[1], "push", "Pushed: detection latency"),
    ):
        _draw_side(ax, [s for s in report.sources if s.origin == origin], title, _COLORS[origin])
    fig.suptitle("bridge: when changes were seen, poll vs push")
    fig.savefig(path, format=path.suffix.lower().lstrip("."), dpi=110)
    plt.close(fig)
    log.info("wrote the latency picture to %s", path)
    return path


def _draw_side(
    ax: object, sources: list[SourceReport], title: str, colors: tuple[str, str]
) -> None:
    from matplotlib.axes import Axes
    from matplotlib.ticker import MaxNLocator

    assert isinstance(ax, Axes)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.set_xlabel("milliseconds from the upstream change to the bridge recording it")
    ax.set_ylabel("events")
    drawn = False
    for s in sources:
        if not s.samples_ms:
            continue
        p50 = s.detection.p50
        label = f"{s.source} (n={len(s.samples_ms)}, p50 {format_ms(p50)})"
        ax.hist(s.samples_ms, bins=30, alpha=0.75, label=label, color=colors[0])
        if p50 is not None:
            ax.axvline(p50, linestyle="--", linewidth=1, color=colors[1])
        drawn = True
    if drawn:
        ax.legend(loc="upper right", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no events with a time", ha="center", va="center")
        ax.set_axis_off()

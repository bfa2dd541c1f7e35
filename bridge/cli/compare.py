"""`bridge latency` and `bridge demo`: polling against push, measured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bridge import jsontext
from bridge.cli.edge import (
    Failure,
    config_for_reading,
    config_option,
    database_option,
    handle_errors,
)
from bridge.compare.view import PLOT_SUFFIXES
from bridge.config import parse_duration

if TYPE_CHECKING:
    from bridge.demo.run import DemoResult
    from bridge.demo.target import Received


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} {exc}") from None


def _plot_path(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise click.BadParameter(f"{value!r} must end in .png or .svg")
    return path


@click.command()
@config_option
@database_option
@click.option(
    "--since",
    metavar="DURATION",
    callback=_duration,
    help="Only events recorded in this last while (e.g. 15m, 1h); poll counters are totals.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option(
    "--plot",
    metavar="FILE",
    callback=_plot_path,
    help="Also draw the poll and push latency distributions into FILE (.png or .svg).",
)
@handle_errors
def latency(
    config_path: str, database: str | None, since: float | None, as_json: bool, plot: Path | None
) -> None:
    """Latency per source (detection, delivery), polling's cost, and poll vs push per pair."""
    from bridge.compare.report import load_report
    from bridge.compare.view import print_report, require_plot, write_plot
    from bridge.store import open_store

    config = config_for_reading(config_path, database)
    if plot is not None:
        require_plot()
    location = config.database_path
    if "://" not in location and location != ":memory:" and not Path(location).exists():
        raise Failure(f"no database at {location} (has the bridge run with this config?)")
    since_ms = int((time.time() - since) * 1000) if since is not None else None
    store = open_store(location)
    store.open()
    try:
        report = asyncio.run(load_report(store, config, since_ms))
    finally:
        store.close()
    if as_json:
        click.echo(jsontext.dumps(report.to_json(), indent=2))
    else:
        print_report(report)
    if plot is not None:
        try:
            write_plot(report, plot)
        except OSError as exc:
            raise Failure(f"cannot write {plot}: {exc.strerror}") from None
        if not as_json:
            click.echo(f"latency picture: {plot}")


def _share(ctx: click.Context, param: click.Parameter, value: str) -> float:
    text = value.strip()
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a share (10%, or 0.1)") from None
    if not 0 <= share < 1:
        raise click.BadParameter("must be at least 0% and less than 100%")
    return share


def _say_merge(say: Callable[[str], None], result: DemoResult, target: Received) -> None:
    """The merge's figures in words: what was dropped, what polling caught, what arrived."""
    up = result.upstream
    (merged,) = result.report.merges
    duplicates = target.valid - len(target.ids)
    say(
        f"merge:    {up.dropped} pushes dropped and {up.delayed} sent late; polling recorded"
        f" {merged.first_poll} changes first ({merged.only_poll} that push never brought)"
    )
    say(
        f"          {merged.changes} distinct changes either path saw, {target.valid} delivered,"
        f" {duplicates} duplicate webhook-ids"
    )


def _rate(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from bridge.demo.run import parse_rate

    try:
        return parse_rate(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option(
    "--duration",
    default="30s",
    show_default=True,
    callback=_duration,
    help="How long the upstream keeps changing items.",
)
@click.option(
    "--every", default="5s", show_default=True, callback=_duration, help="The poll interval."
)
@click.option(
    "--rate",
    default="2/s",
    show_default=True,
    callback=_rate,
    help="Upstream changes per second, on average (2/s, 30/m).",
)
@click.option(
    "--drop",
    default="0%",
    show_default=True,
    callback=_share,
    help="Drop this share of the upstream's pushes (10%), delay a few more, and merge both"
    " paths into one source: every change is delivered once, polling catches what push missed.",
)
@click.option(
    "--dir",
    "folder",
    default="demo-run",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to keep the generated config, the database and the logs.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the report as `bridge latency --json`."
)
@handle_errors
def demo(
    duration: float, every: float, rate: float, drop: float, folder: Path, as_json: bool
) -> None:
    """Run a simulated upstream, the bridge and a target on 127.0.0.1; compare poll with push.

    The upstream changes items at random times; the bridge polls it every --every and also
    receives its pushed webhooks, then delivers everything, signed, to a local target that
    verifies each signature; it also polls a list that never changes, to show what that
    costs. Prints the latency tables and, with the `plot` extra, writes demo-latency.png
    into --dir.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from bridge.compare.view import MEANINGS, has_plot, print_report, quiet_line, write_plot
    from bridge.demo.run import QUIET_SOURCE, DemoOptions, run_demo
    from bridge.errors import MissingExtra

    if every <= 0 or duration <= 0:
        raise click.BadParameter("--duration and --every must be more than 0")
    err = Console(stderr=True)
    options = DemoOptions(
        duration_s=duration, every_s=every, rate_per_s=rate, folder=folder, drop=drop
    )
    click.echo(
        f"demo: items change {rate:g} times a second for {duration:g} s, polled every {every:g} s"
        f" and pushed; files in {folder}/",
        err=True,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=as_json) as bar:
        task = bar.add_task("starting", total=duration + every)

        def on_progress(done: float, total: float, line: str) -> None:
            bar.update(task, completed=done, total=total, description=line)

        result = asyncio.run(run_demo(options, on_progress, bar.console.print))
    plot = write_plot(result.report, folder / "demo-latency.png") if has_plot() else None
    out = Console()
    if as_json:
        click.echo(jsontext.dumps(result.report.to_json(), indent=2))
    else:
        print_report(result.report, out)
    target = result.target
    say = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    for meaning in MEANINGS:
        say(meaning)
    quiet = quiet_line(result.report, QUIET_SOURCE, result.ran_s)
    if quiet is not None:
        say(f"quiet:    {quiet}")
    say(
        f"target:   {target.valid} deliveries with a valid signature, {target.invalid} invalid"
        f" (every request kept in {result.received_path})"
    )
    if drop:
        _say_merge(say, result, target)
    if plot is not None:
        say(f"picture:  {plot.resolve()}")
    else:
        say(f"picture:  not drawn: {MissingExtra('it', 'matplotlib', 'plot')}")
    say(f"config:   {result.config_path}")
    say(f"database: {result.database_path}  (log: {result.log_path})")
    say(f"look again with: bridge latency -c {result.config_path}")
    say(f"            and: bridge events -c {result.config_path}")
    if target.invalid:
        raise Failure(f"{target.invalid} deliveries reached the target with an invalid signature")

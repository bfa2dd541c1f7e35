"""`bridge status`: the summary of sources and targets in the terminal, or as JSON.

A budget's use is known only to the running daemon: it is read from its `/api/status` (at
`server.listen`, with `server.admin_token`, or at `--url`), and shown as unknown when no
daemon answers.

A config file that does not load (edited since the daemon started) does not stop it: one
line says what is wrong with it, and the status is read from what is still known, the
database (`--database`, else the broken file's `database` if that part still reads) and the
running daemon (`--url`, else the broken file's `server` section), every source with a poll
state or events in the database listed, the daemon's refused reload shown. The exit status
is then 0 (the JSON carries `config_error`); 2 only when no database can be named.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bridge import jsontext
from bridge.budgets import BudgetUse
from bridge.cli.daemon_api import admin_headers, base_url, status_at
from bridge.cli.edge import (
    ConfigFailure,
    config_option,
    database_option,
    handle_errors,
    is_config_less,
    say,
)
from bridge.cli.edge import (
    console as edge_console,
)
from bridge.config import Config, load_config, salvage
from bridge.errors import ConfigError, StoreError
from bridge.events import format_time
from bridge.masking import mask_url
from bridge.status.summary import (
    BudgetSummary,
    SourceSummary,
    Summary,
    budget_use_text,
    collect,
    with_iso_times,
)
from bridge.store import open_store
from bridge.terminal import cell


def _when(at_ms: int | None) -> str:
    return format_time(at_ms) if at_ms is not None else "-"


# How long `bridge status` waits for the running daemon's report of the budgets.
DAEMON_TIMEOUT_S = 2.0


def daemon_budgets(config: Config, reported: dict[str, Any] | None) -> list[BudgetUse] | None:
    """The budgets' use as the daemon's `/api/status` reports it; None if unknown."""
    if not config.budgets or reported is None:
        return None
    try:
        return [_budget_use(b) for b in reported.get("budgets", []) if b.get("used") is not None]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _budget_use(b: dict[str, Any]) -> BudgetUse:
    return BudgetUse(
        str(b["name"]),
        int(b["used"]),
        int(b["limit"]),
        float(b["per_s"]),
        int(b["waiting"]),
        bool(b["delaying"]),
    )


def render(summary: Summary) -> None:
    """Print the summary as two tables."""
    from rich.table import Table

    console = edge_console()
    console.print(cell(f"database  {summary.database}"))
    sources = Table(box=None, title="sources", title_justify="left")
    for column in ("source", "kind", "status", "last poll", "last event", "events", "last error"):
        sources.add_column(column, justify="right" if column == "events" else "left")
    for s in summary.sources:
        sources.add_row(
            cell(s.name),
            _kind_text(s),
            cell(s.status),
            _when(s.last_poll_ms) if s.kind == "poll" else "-",
            _when(s.last_event_ms),
            f"{s.events} (+{s.sightings} in {s.merge})" if s.merge else str(s.events),
            cell(s.last_error or ""),
        )
    targets = Table(box=None, title="targets", title_justify="left")
    for column in ("target", "health", "circuit", "backlog", "dead", "last error"):
        targets.add_column(column, justify="right" if column in ("backlog", "dead") else "left")
    for t in summary.targets:
        targets.add_row(
            cell(t.name),
            cell(t.health),
            cell(t.circuit),
            str(t.backlog),
            str(t.dead),
            cell(t.last_error or ""),
        )
    console.print(sources)
    console.print(targets)
    replicas = Table(box=None, title="replicas", title_justify="left")
    for column in ("replica", "started", "last heartbeat", "claims", "polls"):
        replicas.add_column(column, justify="right" if column == "claims" else "left")
    for r in summary.replicas:
        replicas.add_row(
            cell(r.id),
            _when(r.started_ms),
            _when(r.heartbeat_ms),
            str(r.claims),
            cell(", ".join(r.polls)),
        )
    if not summary.replicas:
        replicas.add_row("(none running)", "", "", "", "")
    console.print(replicas)
    if summary.budgets:
        console.print(_budgets_table(summary.budgets))
    if summary.merges:
        console.print(_merges_table(summary.merges))


def _kind_text(s: SourceSummary) -> str:
    """`poll`, `webhook`, `webhook, in merge X` or `merge of A + B`."""
    if s.kind == "merge":
        return "merge of " + " + ".join(s.members)
    return f"{s.kind}, in merge {s.merge}" if s.merge else s.kind


def _merges_table(merges: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(box=None, title="merges", title_justify="left")
    columns = ("merge", "sightings", "changes", "both", "only poll", "only push", "poll first")
    for column in columns:
        table.add_column(column, justify="right" if column not in columns[:2] else "left")
    for m in merges:
        seen = ", ".join(f"{s['source']} {s['sightings']} ({s['path']})" for s in m["members"])
        keys = ("changes", "both", "only_poll", "only_push", "first_poll")
        table.add_row(cell(m["merge"]), cell(seen), *(cell(m[k]) for k in keys))
    return table


def _budgets_table(budgets: list[BudgetSummary]) -> Any:
    from rich.table import Table

    table = Table(box=None, title="budgets", title_justify="left")
    for column in ("budget", "used", "waiting", "sources"):
        table.add_column(column, justify="right" if column == "waiting" else "left")
    for b in budgets:
        waiting = "-" if b.waiting is None else str(b.waiting)
        table.add_row(cell(b.name), budget_use_text(b), waiting, cell(", ".join(b.sources)))
    if any(b.used is None for b in budgets):
        table.caption = "use unknown: no running bridge answered at server.listen"
        table.caption_justify = "left"
    return table


@dataclass(slots=True, frozen=True)
class Sources:
    """Where `bridge status` reads from: the config (a stand-in when it does not load), the
    database, the running daemon's address and headers, and why the config was not used."""

    config: Config
    database: str
    url: str | None  # the running daemon's base URL; None: not asked
    headers: dict[str, str]
    config_error: str | None = None


def _sources(config_path: str, database: str | None, url: str | None) -> Sources:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return _fallback(config_path, database, url, exc)
    if database is not None:
        config = config.model_copy(update={"database": database, "path": None})
    return Sources(config, config.database_path, url or base_url(config.server),
                   admin_headers(config))  # fmt: skip


def _fallback(config_path: str, database: str | None, url: str | None, exc: ConfigError) -> Sources:
    """The sources of a status when the config does not load: what is still known."""
    missing = str(exc).endswith("no such file")
    salvaged = salvage(config_path)
    location = database or (None if missing else salvaged.database)
    if location is None:
        raise ConfigFailure(str(exc))
    server = None if missing else salvaged.server
    if url is None and server is not None:
        url = base_url(server)
    headers = admin_headers(server) if server is not None else {}
    config = Config().model_copy(update={"database": location, "path": None})
    return Sources(config, config.database_path, url, headers, None if missing else str(exc))


def _one_line(error: str) -> str:
    """The config's mistakes in one line: the first, and how many more."""
    first, *more = error.splitlines()
    return first + (f" and {len(more)} more" if more else "")


def _fallback_line(where: Sources, answered: bool) -> str:
    """`bridge: config not used (MISTAKE and N more); status from DB and the bridge at URL`."""
    assert where.config_error is not None
    url = mask_url(where.url) if where.url else None
    daemon = (
        f" and the bridge at {url}" if answered
        else f" (no bridge answered at {url})" if url else ""
    )  # fmt: skip
    return (
        f"bridge: config not used ({_one_line(where.config_error)}); status from"
        f" {where.database}{daemon}"
    )


@click.command()
@config_option
@database_option
@click.option(
    "--url",
    metavar="URL",
    help="The running bridge (http://HOST:PORT) to ask for what only it knows, instead of"
    " the one at the config's server.listen.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@handle_errors
def status(config_path: str, database: str | None, url: str | None, as_json: bool) -> None:
    """Show each source's last poll or receive and each target's health, backlog and dead.

    Times are ISO 8601 in UTC; the JSON has each also in milliseconds (`last_poll_ms`). A
    reload the running daemon refused is shown until one is applied. A config file that no
    longer loads is named in one line, and the status read from the database (`--database`,
    else the file's `database` if still readable) and the running bridge (`--url`, else the
    file's `server.listen`): exit status 0, `config_error` in the JSON.
    """
    if url is not None and not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r} is not an http:// or https:// URL", param_hint="--url")
    where = _sources(config_path, database, url)
    config, location = where.config, where.database
    if "://" not in location and location != ":memory:" and not Path(location).exists():
        raise StoreError(f"no database at {location}: the bridge has not run with this config")
    config_less = is_config_less(config)
    reported = status_at(where.url, where.headers, DAEMON_TIMEOUT_S) if where.url else None
    if where.config_error:
        say(_fallback_line(where, reported is not None), err=True)
    store = open_store(location)
    store.open()
    try:
        summary = asyncio.run(
            collect(
                config,
                store,
                daemon_budgets(config, reported),
                from_store=config_less,
                kinds=reported_kinds(reported) if config_less else None,
                targets_known=reported_targets(reported) if config_less else (),
            )
        )
    finally:
        store.close()
    reload_error = reported.get("reload_error") if reported else None
    if as_json:
        out = with_iso_times(summary.to_dict())
        out["reload_error"] = reload_error
        out["config_error"] = where.config_error
        out["holds"] = reported.get("holds", []) if reported else []
        click.echo(jsontext.dumps(out, indent=2))
        return
    if reload_error:
        say(f"last reload refused (the config in force is the one before): {reload_error}")
    render(summary)
    for hold in reported.get("holds", []) if reported else []:
        until, why = hold["until"], hold["why"]
        click.echo(f"{hold['source']}: held back by the upstream until {until} ({why})")


def reported_kinds(reported: dict[str, Any] | None) -> dict[str, str]:
    """Each source the daemon's `/api/status` lists, and its kind."""
    if reported is None or not isinstance(reported.get("sources"), list):
        return {}
    return {
        s["name"]: s["kind"]
        for s in reported["sources"]
        if isinstance(s, dict)
        and isinstance(s.get("name"), str)
        and s.get("kind") in ("poll", "webhook", "merge")
    }


def reported_targets(reported: dict[str, Any] | None) -> list[str]:
    """Each target the daemon's `/api/status` lists."""
    if reported is None or not isinstance(reported.get("targets"), list):
        return []
    return [
        t["name"]
        for t in reported["targets"]
        if isinstance(t, dict) and isinstance(t.get("name"), str)
    ]

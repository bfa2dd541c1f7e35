"""`bridge poll SOURCE`: the running daemon polls a source now (`--dry-run`: fetch it once
here and show what it would emit);
`bridge presets`: the provider presets a polled source can name."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from bridge import jsontext
from bridge.cli.edge import Failure, config_option, handle_errors, read_config, say
from bridge.config import Config
from bridge.logs import plural
from bridge.poll.auth import Credentials, credential_configs, credential_name
from bridge.poll.engine import Detection, detect, poll_sources
from bridge.poll.transport import new_client
from bridge.store import Store, open_store
from bridge.store.base import PollState


async def _dry_run(config: Config, name: str) -> tuple[Detection, bool]:
    poll = poll_sources(config)[name]
    store: Store | None = None
    location = config.database_path
    # Only an existing database is read: a dry run creates nothing, but for a rotating
    # refresh token, which must be kept the moment the token endpoint answers it.
    if "://" in location or Path(location).exists() or _rotates(config, name):
        store = open_store(location)
        store.open()
    try:
        state = await store.load_poll_state(name) if store else PollState(source=name)
        credentials = Credentials(store, config.path.parent if config.path else Path.cwd())
        credentials.apply(credential_configs(config), {name: poll})
        async with new_client() as client:
            detection = await detect(
                client,
                name,
                poll,
                store=store,
                state=state,
                emit_baseline=True,
                auth=credentials.auth_for(name),
            )
    finally:
        if store is not None:
            store.close()
    return detection, state.baselined


def _rotates(config: Config, name: str) -> bool:
    """Whether the source's token comes from a refresh token (the endpoint may rotate it)."""
    auth = poll_sources(config)[name].auth
    credential = credential_name(name, auth)
    if credential is None or auth is None:
        return False
    oauth2 = auth.oauth2 or config.credentials[credential].oauth2
    return oauth2.grant == "refresh_token"


def _summary(name: str, detection: Detection, baselined: bool) -> dict[str, Any]:
    fetched = detection.fetched
    return {
        "source": name,
        "status": fetched.status,
        "requests": fetched.requests,
        "bytes": fetched.bytes,
        "items": detection.indexed.count,
        "skipped": detection.indexed.skipped,
        "too_long": detection.indexed.too_long,
        "duplicate_keys": detection.indexed.duplicates,
        "first_poll": not baselined,
        "changes": detection.change_count,
        "events": [e.to_cloudevent() for e in detection.events],
    }


# How long `bridge poll SOURCE` waits for the daemon's answer, beyond the poll's own timeout.
ASK_MARGIN_S = 15.0


def poll_via_daemon(config: Config, source: str) -> dict[str, Any]:
    """Ask the running daemon to poll `source` now; its answer, or exit 1 when none answers."""
    import httpx

    from bridge.cli.daemon_api import ask_daemon, daemon_url

    timeout_s = 2 * poll_sources(config)[source].timeout_s + ASK_MARGIN_S
    url = daemon_url(config, f"/api/poll/{source}")
    try:
        response = ask_daemon(config, "POST", f"/api/poll/{source}", timeout_s)
    except httpx.HTTPError as exc:
        raise Failure(
            f"no running bridge answered at {url} ({type(exc).__name__}): start it with"
            " `bridge run`, or use --dry-run to fetch once without it"
        ) from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    # A 429 is the token throttle, or the upstream holding the poll back (`held_until`).
    held = response.status_code == 429 and isinstance(answer, dict) and "held_until" in answer
    if response.status_code in (401, 403, 421, 429) and not held:
        raise Failure(
            f"the daemon refused the request ({response.status_code}): {response.text.strip()}"
        )
    if answer is None:
        raise Failure(f"the daemon answered {response.status_code} without JSON")
    if response.status_code == 404:
        raise click.UsageError(f"the running daemon does not poll {source!r} (reload its config?)")
    if not isinstance(answer, dict) or "polled" not in answer:
        raise Failure(f"the daemon answered {response.status_code}: {answer}")
    return answer


def _print_outcome(answer: dict[str, Any]) -> None:
    name = answer["source"]
    if not answer["polled"]:
        say(f"{name}: not polled: {answer['error']}")
        return
    status = "no answer" if answer["status"] is None else f"HTTP {answer['status']}"
    line = (
        f"{name}: polled at {answer['at']}: {status}, {answer['duration_ms']} ms,"
        f" {plural(answer['requests'], 'request')}, {plural(answer['items'], 'item')},"
        f" {plural(answer['events'], 'new event')}"
    )
    say(line if answer["ok"] else f"{line}; failed: {answer['error']}")


@click.command()
@config_option
@click.argument("source")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Fetch once here and show what would be emitted; change nothing.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@handle_errors
def poll(config_path: str, source: str, dry_run: bool, as_json: bool) -> None:
    """Poll a polled SOURCE now: the running daemon polls it and this prints the outcome.

    Exit 0 when the poll succeeded, 1 when it failed or no daemon answered. The daemon is
    asked at server.listen, with server.admin_token when set.

    With --dry-run the source is fetched once here instead, printing the events it would
    emit; nothing is committed. The diff is against the snapshot in the database when there
    is one; a source never polled shows every item as created, though with `baseline:
    silent` its first real poll emits nothing. For writing a source's config against a real
    API.
    """
    config = read_config(config_path)
    if source not in poll_sources(config):
        known = ", ".join(sorted(poll_sources(config))) or "none"
        raise click.UsageError(f"{source!r} is not a polled source (polled sources: {known})")
    if not dry_run:
        answer = poll_via_daemon(config, source)
        if as_json:
            click.echo(jsontext.dumps(answer, indent=2))
        else:
            _print_outcome(answer)
        if not answer["ok"]:
            raise SystemExit(1)
        return
    detection, baselined = asyncio.run(_dry_run(config, source))
    summary = _summary(source, detection, baselined)
    if as_json:
        click.echo(jsontext.dumps(summary, indent=2))
        return
    click.echo(
        f"{source}: HTTP {summary['status']}, {summary['requests']} requests, "
        f"{summary['items']} items ({summary['skipped']} without a key, "
        f"{summary['too_long']} with a key too long, "
        f"{summary['duplicate_keys']} repeated keys), {len(summary['events'])} events"
    )
    if not baselined and config.sources[source].poll.baseline == "silent":  # type: ignore[union-attr]
        click.echo("(first poll: with baseline: silent the daemon would record these silently)")
    for event in detection.events:
        say(f"  {event.change or 'event':8} {event.type:30} {event.subject or ''}")


@click.command()
def presets() -> None:
    """List the provider presets of polled sources: their resources and the keys they need.

    A source names one with `poll: {preset: NAME, resource: RESOURCE, ...}`; every other
    key of `poll` overrides what the preset sets. `bridge check` shows what it expanded to.
    """
    from bridge.config.presets import PRESETS

    for preset in PRESETS.values():
        click.echo(f"{preset.name}: {preset.summary}")
        # A preset of one resource does not ask for it.
        needs = preset.required if len(preset.resources) == 1 else ("resource", *preset.required)
        click.echo(f"  needs      {', '.join(needs)}")
        if preset.optional:
            click.echo(f"  optional   {', '.join(preset.optional)}")
        for i, (name, how) in enumerate(preset.apis.items()):
            label = "api" if i == 0 else ""
            click.echo(f"  {label:10} {name + (' (default)' if i == 0 else ''):14}  {how}")
        for i, (how, keys) in enumerate(preset.sign_in.items()):
            label = "sign in" if i == 0 else "  or"
            click.echo(f"  {label:10} {', '.join(keys)}: {how}")
        width = max(len(name) for name in preset.resources)
        for i, (name, how) in enumerate(preset.resources.items()):
            label = "resources" if i == 0 else ""
            click.echo(f"  {label:10} {name:{width}}  {how}")

"""The `bridge` command line: the group, and every command family added to it.

The commands are the edge of the house: they import the engines and the store, and nothing
imports them. The error edge (exit status 0, 1 or 2) and the shared options are in `edge.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bridge import __version__
from bridge.cli import compare, deliver, events, init, listen, poll, run, secret, send, status


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bridge")
def cli() -> None:
    """Webhooks for APIs that have none: poll, receive, and deliver one stream of events."""


cli.add_command(init.init)
cli.add_command(run.check)
cli.add_command(run.run)
cli.add_command(run.reload)
cli.add_command(events.events)
cli.add_command(events.event)
cli.add_command(send.send)
cli.add_command(poll.poll)
cli.add_command(poll.presets)
cli.add_command(compare.latency)
cli.add_command(compare.demo)
deliver.register(cli)
cli.add_command(status.status)
cli.add_command(secret.secret)
cli.add_command(listen.listen)


def main() -> None:
    """The console scripts' entry point: `bridge`, and `bridgectl` (the same commands under a
    name no other program has: iproute2's `bridge` is on every Debian and Ubuntu server)."""
    cli(prog_name=Path(sys.argv[0]).name if sys.argv[0].endswith("bridgectl") else "bridge")

"""`bridge secret new`: a new key to sign a target's webhooks with."""

from __future__ import annotations

import click

from bridge.cli.edge import handle_errors
from bridge.deliver.signing import new_keypair, new_secret


@click.group()
def secret() -> None:
    """Make keys for targets' `secret`."""


@secret.command("new")
@click.option(
    "--asymmetric",
    is_flag=True,
    help="An Ed25519 pair: the whsk_ key for the target's secret, the whpk_ key for the receiver.",
)
@handle_errors
def new(asymmetric: bool) -> None:
    """Print a new whsec_ secret, or with --asymmetric a whsk_ key and its whpk_ public key."""
    if not asymmetric:
        click.echo(new_secret())
        return
    private, public = new_keypair()
    click.echo(f"secret: {private}")
    click.echo(f"public: {public}")

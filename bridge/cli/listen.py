"""`bridge listen`: a local target that verifies and prints each delivery (bridge/listen/)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import click

from bridge import jsontext
from bridge.cli.edge import ConfigFailure, Failure, config_option, handle_errors, read_config


def _keys(config_path: str, port: int, secrets: tuple[str, ...]) -> tuple[list[str], str]:
    """The keys to verify with and where they come from, or a usage mistake (exit 2)."""
    from bridge.listen.listener import keys_for_port, verification_key

    if secrets:
        try:
            return [verification_key(s) for s in secrets], "--secret"
        except ValueError as exc:
            raise ConfigFailure(f"--secret: {exc}") from None
    if not Path(config_path).exists():
        raise ConfigFailure(
            f"{config_path}: no such file: give --secret whsec_... (the target's secret),"
            " or --no-verify"
        )
    keys, names = keys_for_port(read_config(config_path), port)
    if not keys:
        raise ConfigFailure(
            f"{config_path}: no target delivers to port {port} of this machine: give --secret"
            " whsec_... (the target's secret), or --no-verify"
        )
    return keys, "target " + ", ".join(names)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise Failure(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock


@click.command()
@click.argument("port", type=click.IntRange(1, 65535), default=9000, required=False)
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    metavar="KEY",
    help="A whsec_ secret or whsk_/whpk_ key to verify with (default: the config's targets"
    " that deliver to PORT on this machine). Repeat for several.",
)
@click.option("--no-verify", is_flag=True, help="Print deliveries without verifying them.")
@click.option(
    "--status",
    type=click.IntRange(200, 599),
    default=204,
    show_default=True,
    help="The status to answer a verified delivery with (e.g. 503 to watch the retries).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per delivery.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many deliveries.")
@handle_errors
def listen(
    port: int,
    config_path: str,
    host: str,
    secrets: tuple[str, ...],
    no_verify: bool,
    status: int,
    as_json: bool,
    count: int | None,
) -> None:
    """Receive the bridge's deliveries on PORT (default 9000), verify and print each one.

    A local target for trying the bridge, as `stripe listen` is for Stripe: point a
    target's url at http://127.0.0.1:PORT/ (the starter config of `bridge init` does),
    and each delivery is shown with its Standard Webhooks signature checked against the
    target's secret. A delivery whose signature is not valid is answered 401.
    """
    import uvicorn

    from bridge.listen.listener import Delivery, Listener

    keys, origin = ([], "") if no_verify else _keys(config_path, port, secrets)
    server: uvicorn.Server | None = None
    seen = 0

    def show(delivery: Delivery, answered: int) -> None:
        nonlocal seen
        if count is not None and seen >= count:
            return  # arrived while the server stops (a retry of a refused one): not shown
        seen += 1
        if as_json:
            click.echo(jsontext.dumps({**delivery.summary(), "status": answered}))
        else:
            for line in delivery.lines(answered):
                click.echo(line)
        if count is not None and seen >= count and server is not None:
            server.should_exit = True

    app = Listener(keys, show, status=status)
    sock = _bind(host, port)
    shown_host = f"[{host}]" if ":" in host else host
    verifying = f"verifying with the secrets of {origin}" if keys else "not verifying"
    click.echo(f"listening on http://{shown_host}:{port}/ ({verifying}); Ctrl-C to stop", err=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()

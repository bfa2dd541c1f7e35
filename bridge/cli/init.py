"""`bridge init [DIR]`: write a commented starter config that `bridge check` accepts.

One webhook source, one polled source and one target. Every secret comes from the
environment, with a random default written into the file (`${VAR:-...}`), so the file works
as it is and production sets the variables instead.
"""

from __future__ import annotations

import base64
import secrets
import shlex
from pathlib import Path

import click

from bridge import jsontext

STARTER = """\
# The bridge's config, written by `bridge init`. Check it with `bridge check -c {name}`,
# run it with `bridge run -c {name}`. docs/reference/config.md lists every key.
#
# ${{VAR:-default}} reads the environment variable VAR, else uses the default after ":-".
# The defaults below were drawn at random for this file; in production set the variables
# (or use ${{file:/path}} or ${{credential:name}} under systemd) and delete the defaults.

# Where events and their deliveries are stored: a SQLite file beside this config, or a
# postgresql:// URL.
database: bridge.db

server:
  # The status page (/), /metrics and the webhook paths. Keep it on 127.0.0.1 unless you
  # also set admin_token (the status page and admin routes need it elsewhere).
  listen: 127.0.0.1:8080
  # access_log: true          # one line per request, combined log format

sources:
  # A webhook source: GitHub (or anything that signs the same way: X-Hub-Signature-256)
  # posts to http://127.0.0.1:8080/hooks/github. Each delivery is one event, typed
  # `issues.opened`, `push`, ...
  github:
    webhook:
      verify: github
      secrets: "${{GITHUB_WEBHOOK_SECRET:-{github_secret}}}"

  # A polled source: an API without webhooks, fetched every minute and compared with the
  # last answer; each item created, updated or deleted is one event (`tickets.created`, ...).
  # Edit the URL (or set TICKETS_URL): it must answer a JSON list, or set `items:` to where
  # the list is in the answer (e.g. `items: data`).
  tickets:
    poll:
      url: "${{TICKETS_URL:-https://api.example.com/v1/tickets}}"
      every: 1m
      id: id                  # the field that identifies an item
      # headers: {{Authorization: "Bearer ${{TICKETS_TOKEN}}"}}

targets:
  # Where events go: POSTed as CloudEvents, signed as Standard Webhooks with this secret
  # (the receiver verifies with the same one). Edit the URL (or set TARGET_URL).
  app:
    url: "${{TARGET_URL:-http://127.0.0.1:9000/events}}"
    secrets: "${{TARGET_SECRET:-{target_secret}}}"
    events: "*"               # type globs: ["issues.*", "tickets.created"]
"""


def starter_config(name: str, github_secret: str, target_secret: str) -> str:
    """The starter config's text, naming its file `name` in its comments."""
    return STARTER.format(name=name, github_secret=github_secret, target_secret=target_secret)


def new_secrets() -> tuple[str, str]:
    """A random webhook secret and a random Standard Webhooks key (`whsec_...`)."""
    key = base64.b64encode(secrets.token_bytes(24)).decode("ascii")
    return secrets.token_hex(16), f"whsec_{key}"


@click.command()
@click.argument("directory", metavar="[DIR]", default=".", type=click.Path(file_okay=False))
@click.option("--name", default="config.yaml", show_default=True, help="The file's name in DIR.")
@click.option("--force", is_flag=True, help="Replace the file when it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def init(directory: str, name: str, force: bool, as_json: bool) -> None:
    """Write a commented starter config into DIR (default: here): one webhook source, one
    polled source and one target, secrets from the environment."""
    folder = Path(directory)
    path = folder / name
    if path.exists() and not force:
        raise click.UsageError(f"{path} exists already (--force replaces it)")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(starter_config(name, *new_secrets()), encoding="utf-8")
    path.chmod(0o600)  # it holds secrets' defaults
    if as_json:
        click.echo(jsontext.dumps({"config": str(path), "written": True}, indent=2))
        return
    click.echo(f"wrote {path}")
    # The hint the README's quickstart follows: cd into DIR, where the commands find the file.
    where = "" if folder == Path(".") else f"`cd {shlex.quote(directory)}`, "
    flag = "" if name == "config.yaml" else f" -c {shlex.quote(name)}"
    click.echo(f"next: {where}edit {name}, then `bridge check{flag}` and `bridge run{flag}`")

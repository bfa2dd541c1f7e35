"""Presets from the outside: `bridge presets`, `bridge check`, `bridge poll --dry-run` against
each simulated provider, mistakes as one line and exit 2, and the real daemon polling all of
them for real (tests/providers.py on 127.0.0.1)."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli import cli
from tests.helpers import DaemonProcess, run_cli, wait_until
from tests.poll.providers import (
    GITHUB_TOKEN,
    GITLAB_TOKEN,
    SHOPIFY_TOKEN,
    STRIPE_KEY,
    Providers,
)
from tests.scripted_server import Script, scripted_server

SOURCES = """
sources:
  gh-issues:
    poll: {{preset: github, resource: issues, repo: octo/hello, token: {github},
            api_url: "{base}", every: 300ms}}
  gh-events:
    poll: {{preset: github, resource: events, repo: octo/hello, token: {github},
            api_url: "{base}", every: 300ms}}
  stripe-events:
    poll: {{preset: stripe, resource: events, token: {stripe}, api_url: "{base}", every: 300ms}}
  shop-orders:
    poll: {{preset: shopify, resource: orders, shop: simulated, token: {shopify},
            api_url: "{base}", every: 300ms}}
  lab-mrs:
    poll: {{preset: gitlab, resource: merge_requests, project: group/project,
            token: {gitlab}, api_url: "{base}", every: 300ms}}
"""
NAMES = ["gh-issues", "gh-events", "stripe-events", "shop-orders", "lab-mrs"]


def sources_yaml(base: str) -> str:
    return SOURCES.format(
        base=base, github=GITHUB_TOKEN, stripe=STRIPE_KEY, shopify=SHOPIFY_TOKEN,
        gitlab=GITLAB_TOKEN,
    )  # fmt: skip


def seed(sims: Providers) -> None:
    """A few items and events upstream before the bridge's first poll."""
    gh, stripe = sims.github, sims.stripe
    for n in (1, 2, 3):
        gh.issues.put(str(n), title=f"issue {n}")
        gh.add_event("WatchEvent")
        sims.shopify.collections["orders"].put(str(n), name=f"#{1000 + n}")
        sims.gitlab.collections["merge_requests"].put(str(n), title=f"mr {n}")
        stripe.add_event("customer.created", f"cus_{n}")
        sims.clock.now_s += 100


@pytest.fixture
def providers() -> Iterator[tuple[Providers, Script, str]]:
    with scripted_server() as (script, base):
        sims = Providers.install(script, page_size=2)
        seed(sims)
        yield sims, script, base
        assert sims.refused() == [], "a request the provider would have refused"


@pytest.fixture
def config_file(tmp_path: Path, providers: tuple[Providers, Script, str]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("database: bridge.db\n" + sources_yaml(providers[2]))
    return path


def test_presets_lists_each_preset_with_its_resources_and_required_keys() -> None:
    result = run_cli("presets")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for line in ("github:", "stripe:", "shopify:", "gitlab:", "needs      resource, repo",
                 "needs      resource, shop, token", "merge_requests", "customers"):  # fmt: skip
        assert line in out


def test_check_prints_what_a_preset_expanded_to_with_secrets_masked(config_file: Path) -> None:
    result = run_cli("check", "-c", str(config_file))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "preset   github, resource issues" in out
    assert "/repos/octo/hello/issues?per_page=100&state=all&sort=updated&direction=desc" in out
    assert "since=<updated_at watermark - 60s, rfc3339>" in out
    assert "X-GitHub-Api-Version: 2022-11-28; Authorization: ***" in out
    assert "ending_before=<last event id seen>" in out
    assert "X-Shopify-Access-Token: ***" in out and "PRIVATE-TOKEN: ***" in out
    assert 'Link rel="next", at most 100 pages; conditional requests' in out
    for secret in (GITHUB_TOKEN, STRIPE_KEY, SHOPIFY_TOKEN, GITLAB_TOKEN):
        assert secret not in out + result.stderr


@pytest.mark.parametrize("name", NAMES)
def test_dry_run_of_each_preset_against_its_simulation(config_file: Path, name: str) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["poll", "-c", str(config_file), name, "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["status"] == 200 and summary["requests"] >= 1
    assert summary["events"], "a dry run shows what the answer holds"
    assert all(e["source"] == name for e in summary["events"])
    text = runner.invoke(cli, ["poll", "-c", str(config_file), name, "--dry-run"])
    assert text.exit_code == 0 and text.output.startswith(f"{name}: HTTP 200"), text.output
    assert len(text.output.splitlines()) >= 2 + len(summary["events"])  # a line per event
    assert not (config_file.parent / "bridge.db").exists()  # a dry run creates nothing


def test_dry_run_as_a_user_runs_it(config_file: Path) -> None:
    result = run_cli("poll", "-c", str(config_file), "stripe-events", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("stripe-events: HTTP 200, 1 requests, 2 items")
    assert lines[-1].split() == ["event", "customer.created", "cus_3"]


@pytest.mark.parametrize(
    ("poll", "message"),
    [
        ("{preset: gitbucket, resource: issues}",
         'c.yaml:3: sources.s.poll.preset: "gitbucket" is not one of github, stripe,'),
        ("{preset: github, repo: a/b, resource: wiki}",
         'c.yaml:3: sources.s.poll.resource: "wiki" is not a resource of preset github'),
        ("{preset: github, resource: issues}",
         "c.yaml:3: sources.s.poll.repo: is required by preset github (owner/name)"),
    ],
)  # fmt: skip
def test_preset_mistakes_exit_2_with_one_line(tmp_path: Path, poll: str, message: str) -> None:
    (tmp_path / "c.yaml").write_text(f"sources:\n  s:\n    poll: {poll}\n")
    for command in ("check", "run"):
        result = run_cli(command, "-c", "c.yaml", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(message), result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# -- the daemon ------------------------------------------------------------------------------


def stored(db: Path) -> list[tuple[str, str | None, str | None, str]]:
    """(source, change, subject, type) of every stored event, read beside the daemon."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            query = "SELECT source, change, subject, type FROM events ORDER BY seq"
            return conn.execute(query).fetchall()
        except sqlite3.OperationalError:
            return []


def baselined(db: Path) -> set[str]:
    if not db.exists():
        return set()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            rows = conn.execute("SELECT source FROM poll_state WHERE baselined = 1").fetchall()
        except sqlite3.OperationalError:
            return set()
    return {r[0] for r in rows}


@pytest.mark.slow
def test_the_daemon_polls_every_preset_and_emits_each_change_once(
    daemon: Callable[..., DaemonProcess], providers: tuple[Providers, Script, str], tmp_path: Path
) -> None:
    sims, script, base = providers
    # The daemon honours GitHub's X-Poll-Interval (60 s); a test cannot wait for it.
    sims.github.poll_interval_s = 1
    daemon("database: bridge.db\n" + textwrap.dedent(sources_yaml(base)))
    db = tmp_path / "bridge.db"
    wait_until(lambda: baselined(db) == set(NAMES), timeout_s=30)
    assert stored(db) == []  # every first poll is a silent baseline
    with sims.github.lock, sims.stripe.lock, sims.shopify.lock, sims.gitlab.lock:
        sims.clock.now_s += 30
        sims.github.issues.put("2", title="renamed")
        sims.github.issues.put("4", title="new", lag_s=2)  # listed a little late
        pushed = sims.github.add_event("PushEvent", login="dev")
        paid = sims.stripe.add_event("invoice.paid", "in_1")
        sims.shopify.collections["orders"].put("1", name="#1001 edited")
        sims.shopify.collections["orders"].put("4", name="#1004")
        sims.gitlab.collections["merge_requests"].put("3", state="merged")
    expected = {
        ("gh-issues", "updated", "2", "gh-issues.updated"),
        ("gh-issues", "created", "4", "gh-issues.created"),
        ("gh-events", None, "dev", "PushEvent"),
        ("stripe-events", None, "in_1", "invoice.paid"),
        ("shop-orders", "updated", "1", "shop-orders.updated"),
        ("shop-orders", "created", "4", "shop-orders.created"),
        ("lab-mrs", "updated", "3", "lab-mrs.updated"),
    }

    def has_all() -> bool:
        if expected - set(stored(db)):
            with sims.github.lock:
                sims.clock.now_s += 1  # the late issue becomes visible
            return False
        return True

    wait_until(has_all, timeout_s=30, interval_s=0.2)
    seen = len(script.seen)
    wait_until(lambda: len(script.seen) >= seen + 3 * len(NAMES), timeout_s=30)  # more polls
    events = stored(db)
    assert sorted(events, key=str) == sorted(expected, key=str)  # each once, nothing else
    assert sims.github.not_modified > 0  # unchanged pages cost a 304, not a rate-limit unit
    assert pushed and paid

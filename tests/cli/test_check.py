"""`bridge check` on the real CLI: messages that name the mistake, warnings, `--json`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.config import Config, parse_config
from bridge.config.keys import known_keys, suggestion
from tests.conftest import TEST_SECRET
from tests.helpers import run_cli


def check(tmp_path: Path, text: str, *args: str):
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return run_cli("check", "-c", str(path), *args)


def test_a_misspelt_required_key_names_the_misspelling_and_the_key_meant(tmp_path: Path) -> None:
    done = check(
        tmp_path,
        """
        sources:
          tickets:
            poll:
              url: http://127.0.0.1:9/tickets
              evry: 3s
              id: id
        """,
    )
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        ':5: sources.tickets.poll.evry: is not a known key; did you mean "every"?'
    )


def test_an_unknown_key_far_from_any_says_only_that(tmp_path: Path) -> None:
    done = check(tmp_path, "server:\n  listen: 127.0.0.1:1\n  zzz: 1\n")
    assert done.returncode == 2
    assert done.stderr.strip().endswith("server.zzz: is not a known key")


def test_the_duration_hint_lists_every_unit(tmp_path: Path) -> None:
    done = check(tmp_path, "retention:\n  events: 7x\n")
    assert done.returncode == 2
    assert "ms, s, m, h or d" in done.stderr and "7d" in done.stderr


def test_known_keys_follow_the_models() -> None:
    assert "every" in known_keys(Config, ("sources", "x", "poll"))
    assert "secrets" in known_keys(Config, ("targets", "t"))
    assert "listen" in known_keys(Config, ("server",))
    assert suggestion("listn", known_keys(Config, ("server",))) == "listen"
    assert suggestion("qqqq", ["every"]) is None


WARNED = f"""
    server:
      listen: 0.0.0.0:{{port}}
    sources:
      api:
        poll:
          url: http://127.0.0.1:9/items
          every: 5s
          jitter: 5s
          id: id
          version: updated_at
          ignore: [seen_at]
      open:
        webhook: {{verify: none, allow_unsigned: true}}
    targets:
      t:
        url: http://127.0.0.1:9/t
        secret: {TEST_SECRET}
        events: "*"
"""


def test_warnings_go_to_stderr_one_line_each_and_exit_0(tmp_path: Path) -> None:
    done = check(tmp_path, WARNED.replace("{port}", "8080"))
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 5, lines
    text = done.stderr
    assert "sources.api.poll.jitter (5s) is at least every (5s)" in text
    assert "sources.api.poll.ignore has no effect together with version" in text
    assert "server.listen (0.0.0.0:8080) is not a loopback address" in text
    assert "sources.open.webhook.verify is none: anyone who can reach /hooks/open" in text
    assert "targets.t.secret: the old spelling of secrets (it still works)" in text
    assert "target    t: http://127.0.0.1:9/t events [*]" in done.stdout


def test_an_empty_file_is_valid_with_a_warning(tmp_path: Path) -> None:
    done = check(tmp_path, "")
    assert done.returncode == 0
    assert "the file is empty" in done.stderr


def test_check_json(tmp_path: Path) -> None:
    done = check(tmp_path, WARNED.replace("{port}", "8080"), "--json")
    assert done.returncode == 0
    out = json.loads(done.stdout)
    assert out["ok"] is True and out["listen"] == "0.0.0.0:8080"
    assert [s["name"] for s in out["sources"]] == ["api", "open"]
    assert out["targets"] == [
        {"name": "t", "kind": "webhook", "url": "http://127.0.0.1:9/t", "to": None, "events": ["*"]}
    ]
    assert out["extras"] == []  # a webhook needs no extra
    assert len(out["warnings"]) == 5
    bad = check(tmp_path, "sources: [1]\n", "--json")
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["ok"] is False


@pytest.mark.parametrize("spelling", ["secret", "secrets"])
def test_targets_take_secrets_and_the_old_secret(spelling: str) -> None:
    config = parse_config(
        f"targets:\n  t:\n    url: http://127.0.0.1:9/\n    {spelling}: {TEST_SECRET}\n"
        "    events: 'orders.*'\n    sources: orders\n"
        "sources:\n  orders:\n    webhook: {verify: none, allow_unsigned: true}\n"
    )
    target = config.targets["t"]
    assert target.secret[0].get_secret_value() == TEST_SECRET
    assert target.events == ["orders.*"] and target.sources == ["orders"]
    assert bool(config.notes) == (spelling == "secret")


def test_secret_and_secrets_together_is_a_mistake(tmp_path: Path) -> None:
    done = check(
        tmp_path,
        f"targets:\n  t:\n    url: http://127.0.0.1:9/\n    secret: {TEST_SECRET}\n"
        f"    secrets: {TEST_SECRET}\n",
    )
    assert done.returncode == 2 and "give secrets or secret, not both" in done.stderr


FIVE_MISTAKES = f"""
    database: five.db
    sources:
      gh:
        webhook: {{verify: githib, secrets: [abc]}}
      api:
        poll: {{url: "http://127.0.0.1:9/x", evry: 1m, id: id}}
      charges:
        poll: {{preset: stripe, resource: chargez, api_key: sk_test_1}}
      orders:
        poll: {{url: "http://127.0.0.1:9/x", every: 5x, id: id}}
      hook:
        webhook: {{verify: none, allow_unsigned: true}}
    targets:
      t:
        url: http://127.0.0.1:9/in
        secrets: [{TEST_SECRET}]
        sources: [hook, hoko]
"""


def test_every_mistake_of_a_file_in_one_run(tmp_path: Path) -> None:
    done = check(tmp_path, FIVE_MISTAKES)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    path = tmp_path / "config.yaml"
    assert lines == [
        f"{path}:4: sources.gh.webhook.verify: "
        "\"githib\" is not one of 'standard-webhooks', 'stripe', 'github', 'slack', 'shopify',"
        " 'gitlab', 'hmac', 'token', 'bearer', 'basic' or 'none'; did you mean \"github\"?",
        f'{path}:6: sources.api.poll.evry: is not a known key; did you mean "every"?',
        f'{path}:8: sources.charges.poll.resource: "chargez" is not a resource of preset'
        " stripe (one of events, customers, charges, invoices, payment_intents, subscriptions,"
        ' products, prices, refunds, payouts, disputes); did you mean "charges"?',
        f'{path}:10: sources.orders.poll.every: "5x" is not a duration (a number and a unit:'
        " ms, s, m, h or d, as in 250ms, 5s, 2m, 1h, 7d; or a number of seconds)",
        f'{path}:17: targets.t.sources.1: "hoko" is not a source or a merge; did you mean "hook"?',
    ]
    as_json = json.loads(check(tmp_path, FIVE_MISTAKES, "--json").stdout)
    assert as_json["ok"] is False and as_json["errors"] == lines
    assert as_json["error"] == lines[0]


def test_every_unset_variable_of_the_example_config_in_one_run() -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.yaml"
    text = example.read_text()
    live = "\n".join(line.split("#")[0] for line in text.splitlines())
    names = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", live))
    assert len(names) >= 5
    env = {k: v for k, v in os.environ.items() if k not in names}
    done = run_cli("check", "-c", str(example), env=env, cwd=example.parent)
    # run_cli adds os.environ: make sure none of the names is set there either.
    assert not names & os.environ.keys()
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    unset = {re.search(r"the environment variable (\w+) is not set", line) for line in lines}
    assert {m.group(1) for m in unset if m} == names, lines
    assert len(lines) == len(names), lines  # and nothing that only follows from them


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        (
            """
            sources:
              gh: {poll: {preset: githob, resource: issues, repo: a/b}}
            """,
            'sources.gh.poll.preset: "githob" is not one of',
        ),
        (
            """
            sources:
              hook: {webhook: {verify: none, allow_unsigned: true}}
              api: {poll: {url: "http://127.0.0.1:9/x", every: 1m, id: id, on_push: hoook}}
            """,
            'sources.api.poll.on_push: "hoook" is not a webhook source; did you mean "hook"?',
        ),
        (
            """
            budgets: {github: {requests: 10, per: 1m}}
            sources:
              api: {poll: {url: "http://127.0.0.1:9/x", every: 1m, id: id, budget: githbu}}
            """,
            'is not a budget (see the top-level budgets); did you mean "github"?',
        ),
        (
            """
            sources:
              hook: {webhook: {verify: none, allow_unsigned: true}}
              api: {poll: {url: "http://127.0.0.1:9/x", every: 1m, id: id, version: v}}
            merge:
              - {name: both, sources: [hook, apii], match: version}
            """,
            'merge.0.sources.1: "apii" is not a source; did you mean "api"?',
        ),
        (
            # The source meant has a mistake of its own: still the name to suggest.
            f"""
            sources:
              github: {{webhook: {{verify: githb, secrets: x}}}}
            targets:
              t: {{url: "http://127.0.0.1:9/in", secrets: [{TEST_SECRET}], sources: [githib]}}
            """,
            'targets.t.sources.0: "githib" is not a source or a merge; did you mean "github"?',
        ),
    ],
    ids=["preset", "on_push", "budget", "merge", "refers-to-a-broken-source"],
)
def test_a_misspelt_name_gets_did_you_mean(tmp_path: Path, text: str, wanted: str) -> None:
    done = check(tmp_path, text)
    assert done.returncode == 2, done.stdout
    assert wanted in done.stderr, done.stderr
    assert "did you mean" in done.stderr


def test_under_journald_each_mistake_line_carries_the_error_priority(tmp_path: Path) -> None:
    """With stderr the journal's (`$JOURNAL_STREAM` names it), every line of a refused config
    starts with `<3>`, so `journalctl -p err` shows why `ExecStart=`/`ExecReload=` failed."""
    path = tmp_path / "config.yaml"
    path.write_text("server:\n  prot: 1\nsources:\n  a:\n    poll: {evry: 1m}\n")
    journal = tmp_path / "journal"
    with journal.open("wb") as stderr:
        stat = os.fstat(stderr.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        done = subprocess.run(
            [sys.executable, "-m", "bridge", "check", "-c", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            timeout=60,
        )
    lines = journal.read_text().splitlines()
    assert done.returncode == 2
    assert len(lines) >= 2
    assert all(line.startswith("<3>") for line in lines), lines
    assert any("prot" in line for line in lines)
    # Outside the journal (a terminal, a pipe), no prefix.
    plain = run_cli("check", "-c", str(path), env={"JOURNAL_STREAM": "1:1"})
    assert plain.returncode == 2
    assert not any(line.startswith("<") for line in plain.stderr.splitlines())

"""The README against the code: every metric name it lists is served by `/metrics`, every
`bridge` command it shows exists, every config key it names is a key of the config."""

from __future__ import annotations

import re
from pathlib import Path

import click
import yaml
from prometheus_client.metrics import MetricWrapperBase

from bridge import metrics
from bridge.cli import cli
from bridge.config import Config
from bridge.config.keys import known_keys

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
TOP_KEYS = set(known_keys(Config, ()))
# Names of the form bridge_x that the README gives and that are no metric.
NOT_METRICS = {"bridge_session"}  # the admin pages' cookie


def metric_names() -> set[str]:
    """The metric names the README mentions."""
    return set(re.findall(r"\bbridge_[a-z_]+[a-z]\b", README)) - NOT_METRICS


def served_names() -> set[str]:
    """Every metric family and sample name `/metrics` serves."""
    out: set[str] = set()
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        name, kind = value._name, value._type
        if kind == "counter":
            out |= {name + "_total"}
        elif kind == "histogram":
            out |= {name, name + "_bucket", name + "_count", name + "_sum"}
        else:
            out.add(name)
    return out


def test_every_metric_the_readme_names_is_served() -> None:
    named = metric_names()
    assert named, "the README lists no metric"
    assert sorted(named - served_names()) == []


def test_every_served_metric_is_in_the_readme() -> None:
    named = metric_names()
    families = {n for n in served_names() if not n.endswith(("_bucket", "_count", "_sum"))}
    assert sorted(families - named) == []


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every command path of the CLI: ("run",), ("target", "enable"), ..."""
    out: set[tuple[str, ...]] = set()
    for name, command in group.commands.items():
        path = (*prefix, name)
        out.add(path)
        if isinstance(command, click.Group):
            out |= command_paths(command, path)
    return out


WORDS = r"bridge ([a-z][a-z-]*(?: [a-z][a-z-]*)?)"


def readme_commands() -> set[tuple[str, ...]]:
    """The command words of each `bridge ...` in inline code and in shell blocks."""
    found = {tuple(m.split()) for m in re.findall(r"`" + WORDS, README)}
    for block in re.findall(r"```(?:sh|console|bash)\n(.*?)```", README, re.S):
        found |= {tuple(m.split()) for m in re.findall(r"^\s*(?:\$ )?" + WORDS, block, re.M)}
    return found


def test_every_command_the_readme_shows_exists() -> None:
    paths = command_paths(cli)
    shown = readme_commands()
    # The second word may be an argument (`bridge poll tickets`): the first must be a command.
    missing = [" ".join(w) for w in shown if w not in paths and w[:1] not in paths]
    assert sorted(missing) == []
    top = {w[:1] for w in shown}
    assert {("init",), ("check",), ("run",), ("events",), ("event",)} <= top
    assert ("event", "show") in shown


def _is_key_path(path: tuple[str, ...]) -> bool:
    """True when each step of `path` is a key the config accepts at that place."""
    for i, key in enumerate(path):
        known = known_keys(Config, path[:i])
        if not known:
            return True  # a name the user chooses (a source's, a header's): anything goes
        if key not in known:
            return False
    return True


def test_every_dotted_config_key_the_readme_names_exists() -> None:
    names = re.findall(r"`([a-z_]+(?:\.[A-Za-z_]+)+)`", README)
    paths = [tuple(n.split(".")) for n in names if n.split(".")[0] in TOP_KEYS]
    # `sources.NAME.poll.every`: NAME (upper case) stands for any name.
    bad = [
        ".".join(p)
        for p in paths
        if not _is_key_path(tuple(k.lower() if k.isupper() else k for k in p))
    ]
    assert sorted(set(bad)) == []


def _yaml_keys(value: object, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    if isinstance(value, dict):
        out = []
        for key, inner in value.items():
            out.append((*path, str(key)))
            out += _yaml_keys(inner, (*path, str(key)))
        return out
    if isinstance(value, list):
        return [p for item in value for p in _yaml_keys(item, (*path, "0"))]
    return []


def test_every_key_of_the_readme_s_whole_config_examples_exists() -> None:
    bad = []
    for block in re.findall(r"```yaml\n(.*?)```", README, re.S):
        try:
            data = yaml.safe_load(block)
        except yaml.YAMLError:
            continue  # a fragment with placeholders
        if not isinstance(data, dict) or not set(data) <= TOP_KEYS:
            continue  # a fragment of a section, not a whole file
        for path in _yaml_keys(data, ()):
            if not _is_key_path(path):
                bad.append(".".join(path))
    assert sorted(set(bad)) == []

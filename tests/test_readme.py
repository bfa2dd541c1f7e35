"""The README and the guides under docs/ against the code: every metric name they list is
served by `/metrics` (and every served metric is named in one of them), every `bridge`
command they show exists, every config key they name is a key of the config, and the
quickstart's commands, taken from the README, run as written against a real `bridge run`.

The generated reference (docs/reference/) is checked against the code by tests/test_docs.py;
it is left out here, so that a metric the guides forget is still noticed."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import yaml
from prometheus_client.metrics import MetricWrapperBase

from bridge import metrics
from bridge.cli import cli
from bridge.config import Config
from bridge.config.keys import known_keys
from tests.helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
# The hand-written pages: every docs/**/*.md but the generated reference.
DOCS = ROOT / "docs"
GUIDES = sorted(p for p in DOCS.rglob("*.md") if p.relative_to(DOCS).parts[0] != "reference")
TEXT = "\n".join([README, *(p.read_text() for p in GUIDES)])
TOP_KEYS = set(known_keys(Config, ()))
# Names of the form bridge_x that the README gives and that are no metric.
NOT_METRICS = {"bridge_session"}  # the admin pages' cookie


def metric_names() -> set[str]:
    """The metric names the README and the guides mention."""
    return set(re.findall(r"\bbridge_[a-z_]+[a-z]\b", TEXT)) - NOT_METRICS


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
    assert named, "the README and the guides list no metric"
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
    found = {tuple(m.split()) for m in re.findall(r"`" + WORDS, TEXT)}
    for block in re.findall(r"```(?:sh|console|bash)\n(.*?)```", TEXT, re.S):
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


def test_every_link_of_the_readme_leads_to_a_file() -> None:
    # The pages' own links are checked by `mkdocs build --strict` (make test); the README is
    # no page of the site, so its map of the docs is checked here.
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if "://" not in link]
    assert len(local) >= 20  # the map of the docs
    assert sorted(link for link in local if not (ROOT / link).exists()) == []
    mapped = {(ROOT / link).resolve() for link in local}
    assert sorted(str(p.relative_to(ROOT)) for p in GUIDES if p.resolve() not in mapped) == []


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
    names = re.findall(r"`([a-z_]+(?:\.[A-Za-z_]+)+)`", TEXT)
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
    for block in re.findall(r"```yaml\n(.*?)```", TEXT, re.S):
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


# -- the quickstart, run as written -----------------------------------------------------------

# Variables a reader's shell would not have; the quickstart sets what it needs itself.
UNSET = ("GITHUB_WEBHOOK_SECRET", "TARGET_SECRET", "TICKETS_URL", "TARGET_URL",
         "BRIDGE_CONFIG", "VIRTUAL_ENV", "NOTIFY_SOCKET")  # fmt: skip


def section(title: str) -> str:
    """The README's text under the heading `## title`, up to the next one."""
    start = README.index(f"\n## {title}")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def sh_blocks(text: str) -> list[str]:
    """The ```sh blocks of `text`, dedented, in order."""
    return [textwrap.dedent(b) for b in re.findall(r"```sh\n(.*?)```", text, re.S)]


class Terminal:
    """One shell a reader types into: each block runs in bash, and what it exported and
    where it went (`cd`) carry over to the next, as they would in one terminal."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd, self.env = cwd, env
        self.state = cwd / f".terminal-{id(self)}"
        self.state.write_text("")
        self.where = cwd / f".terminal-{id(self)}.pwd"
        self.where.write_text(str(cwd))

    def type(self, block: str) -> subprocess.CompletedProcess[str]:
        script = (
            f'. "{self.state}"\ncd "$(cat "{self.where}")"\n{block}\nstatus=$?\n'
            f'export -p > "{self.state}"\npwd > "{self.where}"\nexit $status\n'
        )
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                              env=self.env, cwd=self.cwd, timeout=60)  # fmt: skip


def link_virtualenv(folder: Path) -> None:
    """`folder/.venv`: the virtualenv these tests run in, as `make install` would make it."""
    venv = folder / ".venv"
    if (Path(sys.prefix) / "bin" / "activate").exists():
        venv.symlink_to(Path(sys.prefix))
        return
    (venv / "bin").mkdir(parents=True)  # no virtualenv: an activate that does its one job
    (venv / "bin" / "activate").write_text(f'PATH="{Path(sys.executable).parent}:$PATH"\n')


def closed_port() -> socket.socket:
    """A socket bound on 127.0.0.1 that does not listen: a connection to it is refused, as
    the quickstart's target and placeholder API refuse, and nothing else can take the port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


def stop(shell: subprocess.Popen[bytes]) -> None:
    """Stop the second terminal's `bridge run` as Ctrl-C would stop it there: its whole
    process group, SIGKILL when it takes more than 15 s."""
    if shell.poll() is None:
        os.killpg(shell.pid, signal.SIGINT)
        try:
            shell.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait(timeout=10)


def test_the_quickstart_runs_as_written(tmp_path: Path) -> None:
    quick = section("Quickstart: five minutes")
    install, init, check, run, listen, send, curl, show = sh_blocks(quick)
    assert install.splitlines()[0] == "make install"
    path_line = "\n".join(install.splitlines()[1:])  # what every new terminal runs first
    assert "`bridge poll tickets`" in quick
    port, target_port = free_port(), free_port()
    with closed_port() as api:
        # Step 2 lets the reader set these instead of editing: the API refuses connections,
        # the target is `bridge listen` (on a free port here, 9000 as written).
        env = {k: v for k, v in os.environ.items() if k not in UNSET} | {
            "TICKETS_URL": f"http://127.0.0.1:{api.getsockname()[1]}/v1/tickets",
            "TARGET_URL": f"http://127.0.0.1:{target_port}/events",
        }
        link_virtualenv(tmp_path)
        one = Terminal(tmp_path, env)
        assert one.type(path_line).returncode == 0
        done = one.type(init)
        assert done.returncode == 0 and "wrote mybridge/config.yaml" in done.stdout, done.stderr
        assert "next: `cd mybridge`, edit config.yaml, then `bridge check`" in done.stdout
        site = tmp_path / "mybridge"
        config = site / "config.yaml"
        config.write_text(config.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
        done = one.type(check)
        assert done.returncode == 0 and done.stdout.startswith("config.yaml: ok"), done.stderr
        assert "webhook /hooks/github verify github, 1 secret ***" in done.stdout

        # The second and third terminals start in the checkout, as the reader's do.
        log_path, listen_path = tmp_path / "bridge-run.log", tmp_path / "bridge-listen.log"
        listen = listen.replace("bridge listen", f"bridge listen {target_port}")
        terminals = []
        for block, out_path in ((run, log_path), (listen, listen_path)):
            with open(out_path, "wb") as out:
                terminals.append(
                    subprocess.Popen(
                        ["bash", "-c", f"{path_line}\n{block}"],
                        cwd=tmp_path,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        try:
            base = f"http://127.0.0.1:{port}"

            def started() -> bool:
                for shell in terminals:
                    assert shell.poll() is None, log_path.read_text() + listen_path.read_text()
                return (
                    f"metrics      {base}/metrics" in log_path.read_text()
                    and "listening on" in listen_path.read_text()
                )

            wait_until(started, timeout_s=30, interval_s=0.05)
            logged = log_path.read_text()
            assert re.search(rf"bridge \d+\.\d+\.\d+\S* listening on 127.0.0.1:{port}", logged)
            assert f"status page  {base}/" in logged and f"{base}/hooks/github" in logged
            assert "verifying with the secrets of target app" in listen_path.read_text()

            sent = one.type(send)
            assert sent.returncode == 0, sent.stderr
            found = re.fullmatch(r"202 new event (evt_\w+)\n", sent.stdout)
            assert found, sent.stdout
            event = found.group(1)
            # Step 5's promise: `bridge listen` shows the verified delivery.
            shown_line = f"POST /events  204  verified  issues.opened  {event}"
            wait_until(lambda: shown_line in listen_path.read_text(), timeout_s=30)
            posted = one.type(curl.replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
            assert re.fullmatch(r'\{"id": "evt_\w+"\}', posted.stdout), posted.stdout
            polled = one.type("bridge poll tickets")
            assert polled.returncode == 1, polled.stderr
            assert re.match(r"tickets: polled at \S+: no answer, .*; failed: ", polled.stdout)

            shown = show.replace("evt_...", event)

            def step_six() -> str | None:
                done = one.type(shown)
                assert done.returncode == 0, done.stderr
                return done.stdout if re.search(r"^ app +delivered ", done.stdout, re.M) else None

            out = wait_until(step_six, timeout_s=30, interval_s=0.2)
        finally:
            for shell in terminals:
                stop(shell)
    assert event in out and "evt_" in out.replace(event, "")  # both webhooks are stored
    assert "deliveries and their attempts" in out
    attempt = r"^ +204 +\d{4}-\d\d-\d\dT[\d:.]+Z +\d+ ms"
    assert re.search(attempt, out, re.M), out  # ...and its attempt, answered by bridge listen

"""`bridge status` when the config file no longer loads, against the real daemon and its
real SQLite file: it names the config's mistake in one line and shows the status from the
database and the running daemon's `/api/status` (the refused reload included), every source
with events listed, webhook sources too."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx

from tests.cli.test_operator import Upstream, push_github, start_from_init
from tests.helpers import run_cli, serve_app, wait_until


def refused_reload(url: str) -> str | None:
    return httpx.get(url + "/api/status", timeout=10).json().get("reload_error")


def names(summary: dict) -> dict[str, str]:
    return {s["name"]: s["kind"] for s in summary["sources"]}


def test_status_on_a_broken_config_falls_back_to_the_database_and_the_daemon(
    tmp_path: Path, daemon
) -> None:
    up = Upstream()
    with serve_app(up.app()) as url:
        proc, env = start_from_init(tmp_path, daemon, url)
        push_github(proc.url)
        good = proc.config_path.read_text()
        db = str(proc.config_path.parent / "bridge.db")
        c = ("-c", str(proc.config_path))
        wait_until(lambda: run_cli("status", *c, env=env).returncode == 0, timeout_s=10)

        proc.config_path.write_text(good.replace("every: 1m", "evry: 1m"))
        proc.proc.send_signal(signal.SIGHUP)
        reason = wait_until(lambda: refused_reload(proc.url), timeout_s=15)

        # No flag needed: the broken file still names its database and its server.
        shown = run_cli("status", *c, env=env)
        assert shown.returncode == 0, shown.stderr
        line = shown.stderr.strip()
        assert line.startswith("bridge: config not used (") and "\n" not in line
        at = good.splitlines().index("      every: 1m") + 1
        assert f"({proc.config_path}:{at}: sources.tickets.poll.evry: is not a known key" in line
        assert f"status from {db} and the bridge at {proc.url}" in line
        assert f"last reload refused (the config in force is the one before): {reason}" in (
            shown.stdout
        )
        rows = [row.split() for row in shown.stdout.splitlines()]
        assert any(row[:3] == ["github", "webhook", "ok"] for row in rows), shown.stdout
        assert any(row[:2] == ["tickets", "poll"] for row in rows), shown.stdout

        as_json = run_cli("status", *c, "--json", env=env)
        assert as_json.returncode == 0, as_json.stderr
        out = json.loads(as_json.stdout)
        assert 'did you mean "every"?' in out["config_error"]
        assert out["reload_error"] == reason
        assert names(out) == {"github": "webhook", "tickets": "poll"}
        assert [t["name"] for t in out["targets"]] == ["app"]  # as the daemon reports it
        assert next(s for s in out["sources"] if s["name"] == "github")["events"] == 1

        # With --database too: the daemon is still asked, the webhook source still listed.
        with_db = json.loads(run_cli("status", *c, "--database", db, "--json", env=env).stdout)
        assert with_db["reload_error"] == reason and names(with_db) == names(out)

        # The server section broken as well: --url names the daemon.
        proc.config_path.write_text(
            good.replace("every: 1m", "evry: 1m").replace(f":{proc.port}", ":notaport")
        )
        blind = json.loads(run_cli("status", *c, "--json", env=env).stdout)
        assert blind["reload_error"] is None and "server.listen" in blind["config_error"]
        told = run_cli("status", *c, "--url", proc.url, "--json", env=env)
        assert told.returncode == 0, told.stderr
        assert json.loads(told.stdout)["reload_error"] == reason

        # Broken YAML names nothing: without --database there is nothing to show.
        proc.config_path.write_text(good + "\n  - : [\n")
        broken = run_cli("status", *c, env=env)
        assert broken.returncode == 2 and "not valid YAML" in broken.stderr
        assert "Traceback" not in broken.stderr and broken.stdout == ""
        rescued = run_cli("status", *c, "--database", db, "--url", proc.url, env=env)
        assert rescued.returncode == 0 and "last reload refused" in rescued.stdout
        assert proc.terminate() == 0


def test_salvage_takes_only_what_is_valid_on_its_own(tmp_path: Path, monkeypatch) -> None:
    from bridge.config import salvage

    path = tmp_path / "config.yaml"
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    path.write_text(
        "database: data/b.db\nserver: {listen: '127.0.0.1:9', admin_token: '${NO_SUCH_TOKEN}'}\n"
        "sources: {a: {poll: {every: 5x}}}\nsources: {}\n"
    )
    got = salvage(path)
    assert got.database == str(tmp_path / "data" / "b.db")
    assert got.server is None  # its token could not be filled: not the daemon's server
    path.write_text("sources: {a: 1}\n")
    got = salvage(path)
    assert got.database == str(tmp_path / "bridge.db") and got.server is not None
    assert got.server.listen == "127.0.0.1:8080"  # the defaults the daemon would use
    path.write_text("database: 12\n")
    assert salvage(path).database is None
    path.write_text("database: [\n")
    assert salvage(path).database is None

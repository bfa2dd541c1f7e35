"""`bridge reload` on the real daemon: it signals, waits for the verdict, and its exit status
says whether the new file was applied, as `systemctl reload` then does."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from tests.conftest import TEST_SECRET
from tests.helpers import run_cli, wait_until

BASE = """
    database: reload.db
    sources:
      a: {webhook: {verify: none, allow_unsigned: true}}
"""


def status(proc) -> dict:
    return httpx.get(proc.url + "/api/status", timeout=10).json()


def test_an_applied_reload_exits_0_and_the_change_is_in_force(daemon) -> None:
    proc = daemon(BASE)
    text = proc.config_path.read_text()
    proc.config_path.write_text(text + "  b: {webhook: {verify: none, allow_unsigned: true}}\n")
    done = run_cli("reload", "-c", str(proc.config_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"reloaded {proc.config_path}"
    # The verdict came after the reload: the new source answers at once.
    assert httpx.post(proc.url + "/hooks/b", json={"id": "1"}, timeout=10).status_code == 202
    assert status(proc)["bridge"]["reloads"] == 1


def test_a_refusal_only_the_daemon_sees_exits_1_with_its_line(daemon) -> None:
    # The new file needs a variable this shell has and the daemon's environment lacks.
    proc = daemon(BASE)
    text = proc.config_path.read_text()
    proc.config_path.write_text(
        text + "targets:\n  t:\n    url: http://127.0.0.1:9/in\n    secrets: ['${ONLY_HERE}']\n"
    )
    env = {**os.environ, "ONLY_HERE": TEST_SECRET}
    done = run_cli("reload", "-c", str(proc.config_path), env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "reload refused, the config in force is unchanged:" in done.stderr
    assert "the environment variable ONLY_HERE is not set" in done.stderr
    assert TEST_SECRET not in done.stderr + done.stdout
    assert "ONLY_HERE" in status(proc)["reload_error"]


def test_a_file_with_mistakes_is_refused_with_every_line_and_still_signalled(daemon) -> None:
    proc = daemon(BASE)
    pid = status(proc)["bridge"]["pid"]
    assert pid == proc.proc.pid
    proc.config_path.write_text(proc.config_path.read_text() + "  b: {webhook: {verify: nope}}\n")
    done = run_cli("reload", "-c", str(proc.config_path), "--pid", str(pid))
    assert done.returncode == 2
    assert "sources.b.webhook.verify" in done.stderr
    # The daemon got the signal too, and shows the refusal on its status page.
    wait_until(lambda: status(proc)["reload_error"], timeout_s=20)
    assert "sources.b.webhook.verify" in status(proc)["reload_error"]


def test_without_a_running_bridge_it_says_so(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("server: {listen: 127.0.0.1:9}\n" + BASE.replace("\n    ", "\n"))
    done = run_cli("reload", "-c", str(path))
    assert done.returncode == 1
    assert "no bridge answers at http://127.0.0.1:9/api/status" in done.stderr


# As systemd runs it: ExecReload gets no credentials (systemd 252 to 256 give them to the
# main process only), so the command cannot read what the daemon reads.
GUARDED = """
    database: reload.db
    server:
      listen: 127.0.0.1:{port}
      admin_token: ${credential:admin-token}
    targets:
      t:
        url: http://127.0.0.1:9/in
        secrets: ${credential:target-secret}
    sources:
      a: {webhook: {verify: none, allow_unsigned: true}}
"""


def _credentials(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "credentials"
    folder.mkdir()
    (folder / "admin-token").write_text("a-long-admin-token-for-the-test-0123456789")
    (folder / "target-secret").write_text(TEST_SECRET)
    return {**os.environ, "CREDENTIALS_DIRECTORY": str(folder)}


def _without_credentials() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}


def test_without_the_daemons_credentials_an_applied_reload_exits_0(daemon, tmp_path) -> None:
    proc = daemon(GUARDED, env=_credentials(tmp_path))
    path = proc.config_path
    path.write_text(path.read_text() + "  b: {webhook: {verify: none, allow_unsigned: true}}\n")
    done = run_cli(
        "reload", "-c", str(path), "--pid", str(proc.proc.pid), env=_without_credentials()
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"reloaded {path}"
    assert httpx.post(proc.url + "/hooks/b", json={"id": "1"}, timeout=10).status_code == 202


def test_without_the_daemons_credentials_a_refusal_exits_1(daemon, tmp_path) -> None:
    proc = daemon(GUARDED, env=_credentials(tmp_path))
    path = proc.config_path
    # A variable only this shell has: the daemon refuses the file, the command cannot know.
    path.write_text(path.read_text() + "  b: {webhook: {verify: token, secrets: '${ONLY_HERE}'}}\n")
    env = {**_without_credentials(), "ONLY_HERE": "x" * 32}
    done = run_cli("reload", "-c", str(path), "--pid", str(proc.proc.pid), env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "reload refused, the config in force is unchanged" in done.stderr
    assert "x" * 32 not in done.stderr + done.stdout
    # The hook the refused file adds is not served: the old config is in force.
    assert httpx.post(proc.url + "/hooks/b", json={"id": "1"}, timeout=10).status_code == 404


def test_without_the_daemons_credentials_only_the_files_own_mistakes_are_listed(
    daemon, tmp_path
) -> None:
    proc = daemon(GUARDED, env=_credentials(tmp_path))
    path = proc.config_path
    path.write_text(path.read_text() + "  b: {webhook: {verify: nope}}\n")
    done = run_cli(
        "reload", "-c", str(path), "--pid", str(proc.proc.pid), env=_without_credentials()
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "reload refused, the config in force is unchanged:"
    assert len(lines) == 2 and "sources.b.webhook.verify" in lines[1], lines
    # The daemon got the signal and refused the file too (its status needs the token).
    refused = 'bridge_config_reloads_total{outcome="refused"} 1.0'
    wait_until(lambda: refused in httpx.get(proc.url + "/metrics", timeout=10).text, timeout_s=20)

"""The systemd unit: valid for systemd-analyze, hardened, and consistent with its guide
(docs/guides/service.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.config import load_config
from tests.conftest import TEST_SECRET as TEST_WHSEC
from tests.helpers import REPO, run_cli

UNIT = REPO / "systemd" / "bridge.service"
SERVICE_CONFIG = REPO / "systemd" / "config.yaml"
GUIDE = REPO / "docs" / "guides" / "service.md"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed on this machine"
)


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every line of a unit file, repeated keys kept."""
    out, section = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def values(key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in directives(UNIT.read_text()) if s == section and k == key]


def one(key: str) -> str:
    found = values(key)
    assert len(found) == 1, f"{key}= appears {len(found)} times"
    return found[0]


def guide() -> str:
    return GUIDE.read_text()


def credentials_in(config_text: str) -> set[str]:
    """The credential names a config reads (comments left out)."""
    lines = [line for line in config_text.splitlines() if not line.lstrip().startswith("#")]
    return set(re.findall(r"\$\{credential:([^}]+)\}", "\n".join(lines)))


# -- systemd-analyze -----------------------------------------------------------------------


@needs_analyze
def test_unit_verifies_with_a_stub_executable(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists; point it at a stub in place of the venv.
    stub = tmp_path / "bridge"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    exec_start = one("ExecStart")
    program = exec_start.split()[0]
    copy = tmp_path / "bridge.service"
    copy.write_text(UNIT.read_text().replace(program, str(stub)))
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    complaints = [line for line in result.stderr.splitlines() if "bridge.service" in line]
    assert result.returncode == 0 and complaints == [], result.stderr


@needs_analyze
def test_unit_as_shipped_only_misses_the_venv(tmp_path: Path) -> None:
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    complaints = [line for line in result.stderr.splitlines() if "bridge.service" in line]
    program = one("ExecStart").split()[0]
    if Path(program).exists():
        assert complaints == []
    else:
        # ExecStart= and ExecReload= both name it: one complaint each, and nothing else.
        assert len(complaints) == 2, result.stderr
        assert all(program in line for line in complaints), result.stderr


@needs_analyze
def test_security_exposure_is_at_most_2() -> None:
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for bridge\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


# -- what the unit says --------------------------------------------------------------------


def test_unit_runs_the_bridge_as_a_notify_service_with_watchdog_and_reload() -> None:
    assert one("Type") == "notify"
    assert one("ExecStart").endswith("/bin/bridge run -c /etc/bridge/config.yaml")
    assert one("ExecStart").startswith("/opt/bridge/")
    reload = one("ExecReload").split()
    # `bridge reload` waits for the verdict: a refused config fails `systemctl reload`.
    assert reload[0] == "/opt/bridge/.venv/bin/bridge"
    assert reload[1:] == ["reload", "-c", "/etc/bridge/config.yaml", "--pid", "$MAINPID"]
    assert re.fullmatch(r"\d+s?", one("WatchdogSec"))
    assert one("Restart") == "on-failure"
    assert one("DynamicUser") == "yes"
    assert one("StateDirectory") == "bridge"
    assert one("ConfigurationDirectory") == "bridge"
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert values("WantedBy", "Install") == ["multi-user.target"]


def test_every_credential_the_service_config_reads_is_loaded_by_the_unit() -> None:
    loaded = {v.split(":", 1)[0]: v.split(":", 1)[1] for v in values("LoadCredential")}
    wanted = credentials_in(SERVICE_CONFIG.read_text())
    assert wanted and wanted == set(loaded)
    for name, path in loaded.items():
        assert path == f"/etc/bridge/credentials/{name}"


def test_service_config_is_valid_and_keeps_the_database_in_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {"github-secret": "gh-secret-for-tests", "target-secret": TEST_WHSEC}
    for name in credentials_in(SERVICE_CONFIG.read_text()):
        (tmp_path / name).write_text(secrets[name] + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = load_config(SERVICE_CONFIG)
    state_dir = Path("/var/lib") / one("StateDirectory")
    assert Path(config.database_path).parent == state_dir
    result = run_cli(
        "check", "-c", str(SERVICE_CONFIG), env={"CREDENTIALS_DIRECTORY": str(tmp_path)}
    )
    assert result.returncode == 0, result.stderr
    # The credentials were read, and `check` masks them.
    assert "gh-secret-for-tests" not in result.stdout and TEST_WHSEC not in result.stdout
    assert config.sources["github"].webhook.secrets[0].get_secret_value() == "gh-secret-for-tests"


# -- the guide's install steps match the files --------------------------------------------


def test_the_guide_s_install_steps_match_the_unit() -> None:
    section = guide()
    exec_start = one("ExecStart").split()
    program, config_path = exec_start[0], exec_start[-1]
    venv = str(Path(program).parent.parent)
    assert f"python3 -m venv {venv}" in section
    assert f"{venv}/bin/pip install" in section
    assert "install -m 0644 systemd/bridge.service /etc/systemd/system/bridge.service" in section
    assert f"install -m 0644 systemd/config.yaml {config_path}" in section
    assert f"{program} check -c {config_path}" in section
    assert f"{program} status -c {config_path}" in section
    for line in values("LoadCredential"):
        name, path = line.split(":", 1)
        assert f"LoadCredential={line}" in section
        assert f"install -m 0600 /dev/null {path}" in section
        assert f"${{credential:{name}}}" in section
    for command in (
        "systemctl daemon-reload",
        "systemctl enable --now bridge",
        "journalctl -u bridge",
    ):
        assert command in section
    assert "systemctl reload bridge" in section
    assert (REPO / "systemd" / "config.yaml").exists() and UNIT.exists()


def test_the_unit_documentation_is_the_installed_readme() -> None:
    unit = (Path(__file__).resolve().parents[2] / "systemd" / "bridge.service").read_text()
    docs = [
        line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("Documentation=")
    ]
    assert docs == ["file:///opt/bridge/README.md"]
    assert "install -m 0644 README.md /opt/bridge/README.md" in guide()

"""Configs the daemon refuses, at start and on SIGHUP, with one line and the config in force
kept: an empty one (no sources, no targets) unless `--allow-empty`, and a target's encrypted
`tls.key` without `tls.key_password` (OpenSSL is never let to prompt for it, even with the
daemon on a terminal)."""

from __future__ import annotations

import datetime
import fcntl
import os
import pty
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.daemon.test_ops import sighup_and_wait
from tests.helpers import DaemonProcess, free_port, run_cli, wait_until

HOOK = """
database: bridge.db
sources:
  hook:
    webhook:
      verify: none
      allow_unsigned: true
"""
EMPTY_LINE = (
    "no sources and no targets: refusing to run an empty config "
    "(start with --allow-empty to allow it)"
)


def post(proc: DaemonProcess) -> int:
    return httpx.post(f"{proc.url}/hooks/hook", json={"id": "e-1"}).status_code


# -- an empty config -------------------------------------------------------------------------


@pytest.mark.parametrize("emptied", ["", "database: bridge.db\n", "sources: {}\ntargets: {}\n"])
def test_an_emptied_config_is_refused_on_sighup_and_every_source_stays(
    daemon: Callable[..., DaemonProcess], emptied: str
) -> None:
    proc = daemon(HOOK)
    assert post(proc) == 202
    good = proc.config_path.read_text()
    proc.config_path.write_text(emptied)
    line = sighup_and_wait(proc, "reload refused")
    assert line.endswith(f"{proc.config_path}: {EMPTY_LINE}")
    assert post(proc) == 200  # the source is still there: a duplicate, not a 404
    # Put back, the next SIGHUP applies.
    proc.config_path.write_text(good)
    assert "no changes" in sighup_and_wait(proc, "reloaded")
    assert proc.terminate() == 0
    assert "Traceback" not in proc.log()


def test_an_empty_config_does_not_start_without_allow_empty(
    daemon: Callable[..., DaemonProcess],
) -> None:
    proc = daemon("database: bridge.db\n", wait=False)
    assert proc.proc.wait(timeout=20) == 2
    assert proc.log().strip() == f"{proc.config_path}: {EMPTY_LINE}"
    assert not (proc.config_path.parent / "bridge.db").exists()
    check = run_cli("check", "-c", str(proc.config_path))
    assert check.returncode == 0
    assert "bridge run refuses this config without --allow-empty" in check.stderr


def test_with_allow_empty_it_starts_and_reloads_empty(
    daemon: Callable[..., DaemonProcess],
) -> None:
    proc = daemon(HOOK, "--allow-empty")
    assert post(proc) == 202
    proc.config_path.write_text(f"server:\n  listen: 127.0.0.1:{proc.port}\n")
    assert "source hook removed" in sighup_and_wait(proc, "reloaded")
    assert post(proc) == 404
    assert proc.terminate() == 0


# -- an encrypted tls.key ----------------------------------------------------------------------

PASSPHRASE = "correct horse battery staple"


def client_pair(folder: Path, legacy: bool = False) -> None:
    """client.crt and client.key (encrypted with PASSPHRASE: PKCS#8, or OpenSSL's legacy
    `Proc-Type: 4,ENCRYPTED` format) in `folder`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bridge test client")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (folder / "client.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    form = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if legacy
        else serialization.PrivateFormat.PKCS8
    )
    encryption = serialization.BestAvailableEncryption(PASSPHRASE.encode())
    (folder / "client.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, form, encryption)
    )


def with_tls_target(base: str, password: str | None = None) -> str:
    extra = f"\n      key_password: {password}" if password is not None else ""
    return (
        base
        + f"""
targets:
  mtls:
    url: https://127.0.0.1:9/hook
    secret: whsec_dGFyZ2V0LXNlY3JldC1vZi10aGUtc3VpdGUtMDA=
    tls:
      cert: client.crt
      key: client.key{extra}
"""
    )


@pytest.mark.parametrize("legacy", [False, True], ids=["pkcs8", "traditional"])
def test_check_and_start_refuse_an_encrypted_key_without_its_password(
    tmp_path: Path, legacy: bool
) -> None:
    client_pair(tmp_path, legacy)
    path = tmp_path / "config.yaml"
    path.write_text(with_tls_target(HOOK))
    want = f"{path}:15: targets.mtls.tls.key: the key is encrypted: set tls.key_password"
    check = run_cli("check", "-c", str(path), timeout_s=20)
    assert (check.returncode, check.stderr.strip()) == (2, want)
    # stdin is not a terminal here, and no prompt is tried either way.
    started = run_cli("run", "-c", str(path), timeout_s=20)
    assert (started.returncode, started.stderr.strip()) == (2, want)

    path.write_text(with_tls_target(HOOK, "not the passphrase"))
    check = run_cli("check", "-c", str(path), timeout_s=20)
    assert check.returncode == 2
    assert check.stderr.strip().endswith(
        "targets.mtls.tls.key_password: cannot decrypt the key with it"
    )
    assert "not the passphrase" not in check.stdout + check.stderr

    path.write_text(with_tls_target(HOOK, PASSPHRASE))
    check = run_cli("check", "-c", str(path), timeout_s=20)
    assert check.returncode == 0, check.stderr
    assert PASSPHRASE not in check.stdout + check.stderr


@pytest.fixture
def on_a_terminal(tmp_path: Path) -> Iterator[Callable[[str], DaemonProcess]]:
    """Start `bridge run` in its own session with a pseudo-terminal as its controlling
    terminal and stdin, where OpenSSL's prompt would go (and wait)."""
    started: list[tuple[DaemonProcess, int]] = []

    def start(text: str) -> DaemonProcess:
        port = free_port()
        path = tmp_path / "config.yaml"
        path.write_text(f"server:\n  listen: 127.0.0.1:{port}\n{text}")
        master, terminal = pty.openpty()

        def take_terminal() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        log_path = tmp_path / f"daemon.{int(time.time() * 1000)}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run", "-c", str(path)],
                stdin=terminal,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
                preexec_fn=take_terminal,
                env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
            )
        os.close(terminal)
        daemon = DaemonProcess(path, port, proc, log_path)
        started.append((daemon, master))
        daemon.wait_healthy()
        return daemon

    yield start
    for daemon, master in started:
        daemon.kill()
        os.close(master)


def test_a_sighup_with_an_encrypted_key_on_a_terminal_is_refused_without_a_prompt(
    tmp_path: Path, on_a_terminal: Callable[[str], DaemonProcess]
) -> None:
    client_pair(tmp_path)
    proc = on_a_terminal(HOOK.replace("database: bridge.db", "database: tty.db"))
    assert post(proc) == 202
    text = proc.config_path.read_text()
    proc.config_path.write_text(with_tls_target(text))
    line = sighup_and_wait(proc, "reload refused")
    assert line.endswith("targets.mtls.tls.key: the key is encrypted: set tls.key_password")
    assert "pass phrase" not in proc.log().lower()
    # The daemon still reloads and stops: nothing waits on the terminal.
    proc.config_path.write_text(with_tls_target(text, PASSPHRASE))
    assert "target mtls added" in sighup_and_wait(proc, "reloaded")
    assert post(proc) == 200
    assert proc.terminate(timeout_s=15) == 0
    assert PASSPHRASE not in proc.log()
    assert "Traceback" not in proc.log()


def test_sigterm_after_a_refused_reload_stops_the_daemon(
    tmp_path: Path, on_a_terminal: Callable[[str], DaemonProcess]
) -> None:
    client_pair(tmp_path)
    proc = on_a_terminal(HOOK)
    proc.config_path.write_text(with_tls_target(proc.config_path.read_text()))
    seen = proc.log().count("reloading")
    proc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: proc.log().count("reloading") > seen)
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(timeout=15) == 0


def test_an_encrypted_key_given_as_pem_text_is_refused_the_same_way(tmp_path: Path) -> None:
    client_pair(tmp_path)
    path = tmp_path / "config.yaml"
    pem = f'key: "${{file:{tmp_path}/client.key}}"'
    text = with_tls_target(HOOK).replace("key: client.key", pem)
    path.write_text(text)
    check = run_cli("check", "-c", str(path), timeout_s=20)
    assert check.returncode == 2
    assert check.stderr.strip().endswith(
        "targets.mtls.tls.key: the key is encrypted: set tls.key_password"
    )
    assert "ENCRYPTED" not in check.stdout + check.stderr
    path.write_text(text.replace(pem, f"{pem}\n      key_password: {PASSPHRASE}"))
    check = run_cli("check", "-c", str(path), timeout_s=20)
    assert check.returncode == 0, check.stderr

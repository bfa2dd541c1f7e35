"""Brokers a test starts for itself: a process of Debian's nats-server, rabbitmq-server,
redis-server or mosquitto on a free port of 127.0.0.1, its data in the test's own folder, so
the test may stop it and start it again (the machine's shared brokers are never touched).

Each keeps what it acknowledged across a stop: JetStream's file store, RabbitMQ's durable
queues in its own Mnesia folder, Redis's append-only file fsynced on every write,
Mosquitto's persistence file (written when it stops).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import free_port

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # not the wrapper: it su's away
# How long each may take to listen: RabbitMQ boots an Erlang node (about 10 s here).
START_S = {"nats": 15.0, "redis": 15.0, "mqtt": 15.0, "amqp": 90.0}


def _listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class PrivateBroker:
    """One broker process of the kind `kind` (nats, amqp, redis, mqtt) in `folder`."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.folder = folder
        self.port = free_port()
        self.dist_port = free_port()  # RabbitMQ's Erlang distribution
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """The URL a target or a consumer uses."""
        return {
            "nats": f"nats://127.0.0.1:{self.port}",
            "amqp": f"amqp://guest:guest@127.0.0.1:{self.port}/",
            "redis": f"redis://127.0.0.1:{self.port}/0",
            "mqtt": f"mqtt://127.0.0.1:{self.port}",
        }[self.kind]

    def _command(self) -> tuple[list[str], dict[str, str]]:
        folder = self.folder
        if self.kind == "nats":
            binary = "nats-server"
            args = ["-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(folder / "js")]
            return [binary, *args], {}
        if self.kind == "redis":
            args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(folder)]
            args += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
            return ["redis-server", *args], {}
        if self.kind == "mqtt":
            config = folder / "mosquitto.conf"
            config.write_text(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                f"persistence_location {folder}/\nmax_queued_messages 0\n"
                # Started by root it would become `mosquitto`, who cannot write here.
                f"user {getpass.getuser()}\n"
            )
            return ["mosquitto", "-c", str(config)], {}
        (folder / "enabled_plugins").write_text("[].\n")
        (folder / "rabbitmq.conf").write_text("")
        (folder / "home").mkdir(exist_ok=True)
        env = {
            "HOME": str(folder / "home"),  # its own Erlang cookie
            "RABBITMQ_NODENAME": f"bridgetest{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq"),
            "RABBITMQ_PID_FILE": str(folder / "rabbitmq.pid"),
        }
        return [RABBITMQ_SERVER], env

    def start(self) -> None:
        """Start the broker and wait until it listens; skip (naming the tool) when its
        binary is missing or it cannot start."""
        command, env = self._command()
        tool = Path(command[0]).name
        if shutil.which(command[0]) is None:
            pytest.skip(f"{tool} is not installed")
        self.starts += 1
        log = open(self.folder / f"{tool}.{self.starts}.log", "wb")  # noqa: SIM115
        with log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                cwd=self.folder,
                start_new_session=True,  # its children (Erlang's) stop with it
            )
        deadline = time.monotonic() + START_S[self.kind]
        while not _listens(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._end()
                pytest.skip(f"{tool} could not start (see {log.name})")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the broker as its service manager would (SIGTERM), and wait for it."""
        self._end()

    def _end(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # RabbitMQ's node may outlive the script a moment: wait until the port is free.
        deadline = time.monotonic() + 30
        while _listens(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)


@contextmanager
def private_broker(kind: str, folder: Path) -> Iterator[PrivateBroker]:
    """A started `PrivateBroker`, stopped at the end whatever happened."""
    broker = PrivateBroker(kind, folder)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()

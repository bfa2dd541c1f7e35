"""Every config in `examples/` passes the real `bridge check`: exit 0, the warnings expected
(none but the empty one's), each secret taken from the environment and never printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

EMPTY = "no sources and no targets: bridge run refuses this config without --allow-empty"
# Each example and the warnings `bridge check` gives for it.
EXPECTED_WARNINGS: dict[str, list[str]] = {
    "local.yaml": [EMPTY],
    "github.yaml": [],
    "stripe.yaml": [],
    "shopify.yaml": [],
    "slack.yaml": [],
    "svix.yaml": [],
    "alertmanager.yaml": [],
    "json-api.yaml": [],
    "merge.yaml": [],
    "postgres-replicas.yaml": [],
    "nats.yaml": [],
    "rabbitmq.yaml": [],
    "redis.yaml": [],
    "mqtt.yaml": [],
    "notify.yaml": [],
    "alerts.yaml": [],
}
# The extra `bridge check` says each example of a broker or notify target needs.
EXPECTED_EXTRAS = {
    "nats.yaml": "nats",
    "rabbitmq.yaml": "amqp",
    "redis.yaml": "redis",
    "mqtt.yaml": "mqtt",
    "notify.yaml": "notify",
}

# A dummy for every variable: a valid Standard Webhooks key, so it serves as any secret.
DUMMY = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def variables(path: Path) -> set[str]:
    """The environment variables a config file reads without a default."""
    return set(_VARIABLE.findall(path.read_text()))


def test_every_example_is_covered() -> None:
    on_disk = {p.name for p in EXAMPLES.iterdir()} - {"README.md"}
    assert on_disk == set(EXPECTED_WARNINGS)
    listed = (EXAMPLES / "README.md").read_text()
    assert [name for name in sorted(on_disk) if f"`{name}`" not in listed] == []


@pytest.mark.parametrize("name", sorted(EXPECTED_WARNINGS))
def test_an_example_passes_bridge_check(name: str) -> None:
    path = EXAMPLES / name
    assert path.read_text().startswith("#"), "an example says what it is for"
    needed = variables(path)
    env = dict.fromkeys(needed, DUMMY)
    done = run_cli("check", "-c", str(path), env=env)
    assert done.returncode == 0, done.stderr
    warnings = [line.strip().removeprefix("warning").strip() for line in done.stderr.splitlines()]
    assert warnings == EXPECTED_WARNINGS[name]
    assert DUMMY not in done.stdout  # secrets masked
    extras = re.findall(r"^  extra +(\S+) for ", done.stdout, re.MULTILINE)
    assert extras == ([EXPECTED_EXTRAS[name]] if name in EXPECTED_EXTRAS else [])
    if needed:
        # Each secret comes from the environment: without it, the file names what is missing.
        bare = {k: v for k, v in os.environ.items() if k not in needed}
        missing = subprocess.run(
            [sys.executable, "-m", "bridge", "check", "-c", str(path)],
            capture_output=True,
            text=True,
            env=bare,
            timeout=60,
        )
        assert missing.returncode == 2
        assert all(f"${{{v}}}" in missing.stderr for v in needed), missing.stderr

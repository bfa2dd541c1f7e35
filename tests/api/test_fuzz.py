"""schemathesis against the real daemon: generated requests to every operation of the spec
(a bounded number each) find no 5xx, no answer that breaks the spec, and, without the
token, no answer but 401 and no change in the store.

The stream is left out of the generated requests (an answer that lasts minutes by design);
tests/api/test_stream.py covers it. Two checks are left out with the token: `ignored_auth`
sends wrong tokens, which the admin throttle then counts (every later request, the right
token's too, would be a 429: the run without a token below covers who may call), and
`positive_data_acceptance`, which takes any schema-valid value for an accepted one: a schema
cannot say which target names the config has or what a cursor holds, and those answers are
the documented 404, 400 and 422 problems.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.parts import AUTH, Bridge, running, wait_for_attempts
from tests.helpers import REPO, run_cli

SPEC = REPO / "docs" / "openapi.json"
EXAMPLES = 25  # per operation and phase


def schemathesis(bridge: Bridge, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is in the test extra"
    command = [
        st, "run", str(SPEC), "--url", bridge.proc.url + "/api/v1",
        "--max-examples", str(EXAMPLES), "--workers", "1", "--seed", "31",
        "--exclude-path", "/stream", "--phases", "examples,coverage,fuzzing",
        "--generation-database", "none", "--no-color", "--request-timeout", "10", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp)


def _state(bridge: Bridge) -> object:
    """What a change would touch: the targets and every delivery, read from the store."""
    config = str(bridge.proc.config_path)
    out = []
    for args in (("targets",), ("deliveries", "--limit", "1000")):
        done = run_cli(*args, "--json", "-c", config)
        assert done.returncode == 0, done.stderr
        out.append(json.loads(done.stdout))
    return out


# Two runs of a few hundred requests each on a machine shared with other tests.
@pytest.mark.timeout(600)
def test_the_api_survives_generated_requests_and_without_the_token_changes_nothing(
    daemon, tmp_path: Path
) -> None:
    with running(daemon) as bridge:
        for i in range(3):
            bridge.send(f"f{i}")
        wait_for_attempts(bridge, 9)  # every delivery dead: the store holds still
        before = _state(bridge)
        har = tmp_path / "without-token.har"
        bare = schemathesis(
            bridge, tmp_path, "--checks", "not_a_server_error,status_code_conformance,"
            "content_type_conformance,response_schema_conformance",
            "--report", "har", "--report-har-path", str(har),
            "--generation-with-security-parameters", "false",
        )  # fmt: skip
        assert bare.returncode == 0, bare.stdout + bare.stderr
        statuses = [e["response"]["status"] for e in json.loads(har.read_text())["log"]["entries"]]
        assert len(statuses) > 100 and set(statuses) == {401}, sorted(set(statuses))
        assert _state(bridge) == before
        assert "api: " not in bridge.proc.log()
        # With the token: every check but the two above.
        header = f"Authorization: {AUTH['Authorization']}"
        full = schemathesis(bridge, tmp_path, "-H", header, "--checks", "all", "--exclude-checks",
                            "ignored_auth,positive_data_acceptance")  # fmt: skip
        assert full.returncode == 0, full.stdout + full.stderr
        assert "Traceback" not in bridge.proc.log()

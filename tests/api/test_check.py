"""`bridge check` names the API's base URL and whether it is open."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli

SOURCE = "sources:\n  s:\n    webhook: {verify: none, allow_unsigned: true}\n"


@pytest.mark.parametrize(
    ("server", "access", "words"),
    [
        ("  listen: 127.0.0.1:8431\n", "open", "open to clients on this machine"),
        ("  listen: 127.0.0.1:8431\n  admin_token: t0ken-of-the-admin\n", "token",
         "needs Authorization: Bearer <server.admin_token>"),
        ("  listen: 0.0.0.0:8431\n", "closed", "refused: set server.admin_token"),
    ],
)  # fmt: skip
def test_check_names_the_api_and_who_may_call_it(
    write_config, server: str, access: str, words: str
) -> None:
    path = write_config("server:\n" + server + SOURCE)
    text = run_cli("check", "-c", str(path))
    assert text.returncode == 0, text.stderr
    assert f"  api       http://127.0.0.1:8431/api/v1: {words}" in text.stdout
    assert "t0ken-of-the-admin" not in text.stdout
    done = run_cli("check", "--json", "-c", str(path))
    api = json.loads(done.stdout)["api"]
    assert api["url"] == "http://127.0.0.1:8431/api/v1"
    assert api["access"] == access and api["open"] is (access == "open")

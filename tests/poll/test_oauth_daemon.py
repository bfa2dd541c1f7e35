"""OAuth2 with the real daemon and the real CLI, against Authlib's authorization server.

A kill -9 between a refresh token's rotation and the use of the access token that came
with it: the restarted daemon refreshes with the rotated token the store kept, and the
source keeps working. `bridge check` says which refresh token is in force; `bridge poll
--dry-run` works with each grant. No secret in any log or output.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, run_cli, wait_until
from tests.oauth_server import OAuthServer, oauth_server
from tests.reliability.parts import leaked_secrets
from tests.scripted_server import Reply, Script, Seen, scripted_server

pytestmark = pytest.mark.slow

CLIENT_SECRET = "cs-daemon-secret-value"
ITEMS = {"data": [{"id": 1}, {"id": 2}]}

CONFIG = """
database: bridge.db
credentials:
  app:
    oauth2:
      grant: refresh_token
      token_url: {token_url}
      client_id: app
      client_secret: {secret}
      refresh_token: {refresh}
sources:
  items:
    poll:
      url: {url}/items
      every: 200ms
      timeout: 60s
      id: id
      items: data
      auth: {{credential: app}}
"""


@pytest.fixture
def oauth() -> Iterator[OAuthServer]:
    with oauth_server() as server:
        server.add_client("app", CLIENT_SECRET)
        yield server


class HeldApi:
    """The protected API; while `hold` is set it keeps each request unanswered (bounded)."""

    def __init__(self, oauth: OAuthServer, script: Script) -> None:
        self.oauth = oauth
        self.hold = threading.Event()
        self.release = threading.Event()
        self.held = 0
        self.answers: list[int] = []
        script.route("/items", self.answer)

    def answer(self, seen: Seen) -> Reply:
        if not self.oauth.check(seen.headers.get("authorization")):
            self.answers.append(401)
            return Reply(401, {"error": "invalid_token"})
        if self.hold.is_set():
            self.held += 1
            self.release.wait(timeout=30)
        self.answers.append(200)
        return Reply(200, ITEMS)


def stored_refresh_token(db: Path) -> str | None:
    if not db.exists():
        return None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            row = conn.execute("SELECT refresh_token FROM oauth_refresh_tokens").fetchone()
        except sqlite3.OperationalError:
            return None
    return row[0] if row else None


def polled_ok(db: Path) -> bool:
    if not db.exists():
        return False
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            row = conn.execute(
                "SELECT baselined, consecutive_failures FROM poll_state WHERE source='items'"
            ).fetchone()
        except sqlite3.OperationalError:
            return False
    return bool(row and row[0] and row[1] == 0)


def test_a_kill_between_rotation_and_use_keeps_the_rotated_refresh_token(
    daemon: Callable[..., DaemonProcess], oauth: OAuthServer, tmp_path: Path
) -> None:
    db = tmp_path / "bridge.db"
    initial = oauth.issue_refresh_token("app", "read")
    with scripted_server() as (script, url):
        api = HeldApi(oauth, script)
        api.hold.set()
        config = CONFIG.format(token_url=oauth.token_url, secret=CLIENT_SECRET,
                               refresh=initial, url=url)  # fmt: skip
        first = daemon(config)
        # The first poll rotated the refresh token and now waits on its API request.
        wait_until(lambda: api.held == 1, timeout_s=20)
        rotated = stored_refresh_token(db)
        assert oauth.refresh_tokens_presented() == [initial]
        assert rotated is not None and rotated != initial
        assert oauth.live_refresh(initial) is None  # the old one died at the rotation
        first.kill()
        api.hold.clear()
        api.release.set()

        check = run_cli("check", "-c", str(first.config_path), cwd=tmp_path)
        assert check.returncode == 0, check.stderr
        assert "refresh token in force: the stored one, rotated at" in check.stdout
        assert initial not in check.stdout and rotated not in check.stdout

        second = daemon(config)
        wait_until(lambda: polled_ok(db), timeout_s=20)
        assert oauth.refresh_tokens_presented()[:2] == [initial, rotated]
        assert all(r["status"] == 200 for r in oauth.requests)
        assert stored_refresh_token(db) not in (None, initial, rotated)
        assert 200 in api.answers
        second.terminate()
    secrets = [initial, rotated, CLIENT_SECRET]
    secrets += [t.access_token for t in oauth.tokens if t.access_token]
    secrets += [t.refresh_token for t in oauth.tokens if t.refresh_token]
    assert leaked_secrets(tmp_path, secrets) == []


@pytest.fixture
def api(oauth: OAuthServer) -> Iterator[tuple[HeldApi, str]]:
    with scripted_server() as (script, url):
        yield HeldApi(oauth, script), url


def _dry_run(tmp_path: Path, text: str) -> dict[str, object]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    done = run_cli("poll", "--dry-run", "--json", "-c", str(path), "items", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_a_dry_run_works_with_each_grant(
    oauth: OAuthServer, api: tuple[HeldApi, str], tmp_path: Path
) -> None:
    _, url = api
    initial = oauth.issue_refresh_token("app", "read")
    text = CONFIG.format(token_url=oauth.token_url, secret=CLIENT_SECRET, refresh=initial, url=url)
    answer = _dry_run(tmp_path, text)
    assert answer["status"] == 200 and answer["items"] == 2
    # The rotation was kept: a dry run creates the database for it, and the next one uses it.
    rotated = stored_refresh_token(tmp_path / "bridge.db")
    assert rotated is not None and rotated != initial
    _dry_run(tmp_path, text)
    assert oauth.refresh_tokens_presented() == [initial, rotated]

    text = text.replace("grant: refresh_token", "grant: client_credentials").replace(
        f"      refresh_token: {initial}\n", "      scope: read\n"
    )
    answer = _dry_run(tmp_path, text)
    assert answer["items"] == 2 and oauth.requests[-1]["grant_type"] == "client_credentials"

    key = oauth.add_service_account("bridge@project.iam.test", users=("ann@example.com",))
    (tmp_path / "key.json").write_text(json.dumps(key))
    jwt = text.replace("grant: client_credentials", "grant: jwt_bearer").replace(
        "      client_id: app\n", "      key_file: key.json\n      subject: ann@example.com\n"
    )
    jwt = jwt.replace(f"      client_secret: {CLIENT_SECRET}\n", "")
    answer = _dry_run(tmp_path, jwt)
    assert answer["items"] == 2 and oauth.assertions[-1]["sub"] == "ann@example.com"


def test_a_dry_run_with_a_failing_token_endpoint_says_why_in_one_line(
    oauth: OAuthServer, api: tuple[HeldApi, str], tmp_path: Path
) -> None:
    _, url = api
    oauth.revoke_refresh_tokens()
    dead = oauth.issue_refresh_token("app", "read")
    oauth.revoke_refresh_tokens()
    path = tmp_path / "config.yaml"
    path.write_text(
        CONFIG.format(token_url=oauth.token_url, secret=CLIENT_SECRET, refresh=dead, url=url)
    )
    done = run_cli("poll", "--dry-run", "-c", str(path), "items", cwd=tmp_path)
    assert done.returncode == 1
    assert f"token endpoint {oauth.token_url}: invalid_grant (HTTP 400)" in done.stderr
    assert "Traceback" not in done.stderr and dead not in done.stderr + done.stdout
    assert CLIENT_SECRET not in done.stderr + done.stdout


def test_check_describes_each_auth_without_a_secret(tmp_path: Path) -> None:
    (tmp_path / "key.json").write_text(
        json.dumps(
            {
                "client_email": "sa@p.iam.test",
                "private_key": "-----BEGIN PRIVATE KEY-----"
                "\nMIIsecretkeybody\n-----END PRIVATE KEY-----\n",
            }
        )
    )
    path = tmp_path / "config.yaml"
    path.write_text(
        "database: bridge.db\n"
        "credentials:\n"
        "  crm: {oauth2: {grant: refresh_token, token_url: 'https://auth.test/token',"
        " client_id: app, client_secret: cs-check-secret, refresh_token: rt-check-secret,"
        " scope: [read, write], params: {resource: res-check-secret}}}\n"
        "sources:\n"
        "  a: {poll: {url: 'https://api.test/a', every: 1m, id: id, auth: {credential: crm}}}\n"
        "  b: {poll: {url: 'https://api.test/b', every: 1m, id: id,"
        " auth: {bearer: bearer-check-secret}}}\n"
        "  c: {poll: {url: 'https://api.test/c', every: 1m, id: id,"
        " auth: {basic: {username: me, password: pw-check-secret}}}}\n"
        "  d: {poll: {url: 'https://api.test/d', every: 1m, id: id,"
        " auth: {header: {X-Api-Key: key-check-secret}}}}\n"
        "  e: {poll: {url: 'https://api.test/e', every: 1m, id: id,"
        " auth: {oauth2: {grant: jwt_bearer, token_url: 'https://oauth2.test/token',"
        " key_file: key.json, subject: ann@example.com, scope: cal}}}}\n"
    )
    done = run_cli("check", "--json", "-c", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert "check-secret" not in out and "MIIsecret" not in out
    auth = {s["name"]: s["request"]["auth"] for s in json.loads(done.stdout)["sources"]}
    assert auth == {
        "a": "credential crm: oauth2 refresh_token at https://auth.test/token; client app"
        " (client_secret_basic, secret ***); scope read write; params resource=***;"
        " refresh token in force: the config's",
        "b": "bearer ***",
        "c": "basic, user me, password ***",
        "d": "headers X-Api-Key: ***",
        "e": "oauth2 jwt_bearer at https://oauth2.test/token; key file key.json;"
        " acting as ann@example.com; scope cal",
    }
    assert not (tmp_path / "bridge.db").exists()  # check created no database

"""A polled source's `auth:` against a real OAuth2 server (Authlib's, tests/oauth_server.py).

The protected API is a scripted server whose route asks the OAuth2 server whether the
request's Bearer token is live; the poller runs over a real SQLite store.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.cli.run import refresh_tokens_in_force
from bridge.config import Config, parse_config
from bridge.errors import FetchError, StoreUnavailable
from bridge.poll.auth import Credentials, TokenProvider, credential_configs
from bridge.poll.engine import Poller
from bridge.runtime import Runtime
from bridge.store.sqlite import SQLiteStore
from bridge.store.tokens import StoredRefreshToken, TokenStore
from tests.conftest import TEST_SECRET
from tests.helpers import free_port
from tests.oauth_server import Fault, OAuthServer, oauth_server
from tests.scripted_server import Reply, Script, Seen, scripted_server

pytestmark = pytest.mark.anyio

ITEMS = [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}]
CLIENT_SECRET = "cs-very-secret-value-1"


@pytest.fixture
def oauth() -> Iterator[OAuthServer]:
    with oauth_server() as server:
        yield server


class Api:
    """The protected API: items for a live Bearer token, 401 otherwise; what it saw."""

    def __init__(self, oauth: OAuthServer, script: Script, url: str, db: Path) -> None:
        self.oauth, self.script, self.url, self.db = oauth, script, url, db
        self.items = list(ITEMS)
        self.answers: list[int] = []
        # The refresh token the store held when each request arrived (read from the file).
        self.stored_then: list[str | None] = []
        script.route("/items", self.answer)

    def answer(self, seen: Seen) -> Reply:
        self.stored_then.append(self.stored_refresh_token())
        ok = self.oauth.check(seen.headers.get("authorization"))
        self.answers.append(200 if ok else 401)
        if not ok:
            challenge = ("WWW-Authenticate", 'Bearer error="invalid_token"')
            return Reply(401, {"error": "invalid_token"}, headers=[challenge])
        return Reply(200, {"data": self.items})

    def stored_refresh_token(self) -> str | None:
        if not self.db.exists():
            return None
        with sqlite3.connect(self.db) as conn:
            try:
                row = conn.execute("SELECT refresh_token FROM oauth_refresh_tokens").fetchone()
            except sqlite3.OperationalError:
                return None
        return row[0] if row else None


@pytest.fixture
def api(oauth: OAuthServer, tmp_path: Path) -> Iterator[Api]:
    with scripted_server() as (script, url):
        yield Api(oauth, script, url, tmp_path / "bridge.db")


def make_config(
    on: Api,
    credentials: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    **auths: Any,
) -> Config:
    """Sources named after `auths` (each its `auth:`, and `extra` keys) polling the API."""
    poll = {"url": on.url + "/items", "every": "1m", "id": "id", "items": "data", "timeout": "5s"}
    sources = {
        name: {"poll": {**poll, **(extra or {}), "auth": auth}} for name, auth in auths.items()
    }
    data = {
        "database": str(on.db),
        "sources": sources,
        "credentials": credentials or {},
        "targets": {"t": {"url": "http://127.0.0.1:9/in", "secret": TEST_SECRET}},
    }
    return parse_config(yaml.safe_dump(data))


class Env:
    def __init__(self, store: SQLiteStore, oauth: OAuthServer, api: Api) -> None:
        self.store, self.oauth, self.api = store, oauth, api
        self.pollers: list[Poller] = []

    def poller(self, config: Config) -> Poller:
        poller = Poller(Runtime(config=config, store=self.store))
        self.pollers.append(poller)
        return poller

    def client_credentials(self, **extra: Any) -> dict[str, Any]:
        self.oauth.add_client(
            "app", CLIENT_SECRET, auth_method=extra.pop("method", "client_secret_basic")
        )
        return {"grant": "client_credentials", "token_url": self.oauth.token_url,
                "client_id": "app", "client_secret": CLIENT_SECRET, **extra}  # fmt: skip

    def refresh(self, initial: str | None = None) -> dict[str, Any]:
        if "app" not in self.oauth.clients:
            self.oauth.add_client("app", CLIENT_SECRET)
        initial = initial or self.oauth.issue_refresh_token("app", "read")
        return {"grant": "refresh_token", "token_url": self.oauth.token_url, "client_id": "app",
                "client_secret": CLIENT_SECRET, "refresh_token": initial}  # fmt: skip

    async def error(self, source: str) -> str:
        return (await self.store.load_poll_state(source)).last_error or ""


@pytest.fixture
async def env(store: SQLiteStore, oauth: OAuthServer, api: Api) -> AsyncIterator[Env]:
    e = Env(store, oauth, api)
    yield e
    for poller in e.pollers:
        await poller.stop(1.0)


# -- client_credentials ------------------------------------------------------------------------


async def test_sources_sharing_a_credential_share_one_token_and_one_request(env: Env) -> None:
    oauth2 = env.client_credentials(scope=["read", "write"], audience="https://api.test",
                                    params={"resource": "items"})  # fmt: skip
    names = ["a", "b", "c", "d", "e"]
    config = make_config(env.api, {"api": {"oauth2": oauth2}},
                         **{name: {"credential": "api"} for name in names})  # fmt: skip
    poller = env.poller(config)
    await asyncio.gather(*(poller.poll_once(name) for name in names))  # all want a token at once
    await poller.poll_once("a")
    assert len(env.oauth.requests) == 1
    request = env.oauth.requests[0]
    assert request["status"] == 200 and request["basic"]
    assert request["form"]["scope"] == "read write"
    assert request["form"]["audience"] == "https://api.test"
    assert request["form"]["resource"] == "items"
    assert "client_secret" not in request["form"]
    assert env.api.answers == [200] * 6
    for source in names:
        state = await env.store.load_poll_state(source)
        assert state.baselined and state.items == 2 and not state.last_error


async def test_client_secret_post_sends_the_secret_in_the_body(env: Env) -> None:
    oauth2 = env.client_credentials(method="client_secret_post", client_auth="client_secret_post")
    poller = env.poller(make_config(env.api, s={"oauth2": oauth2}))
    await poller.poll_once("s")
    request = env.oauth.requests[0]
    assert request["status"] == 200 and not request["basic"]
    assert request["form"]["client_secret"] == CLIENT_SECRET
    assert env.api.answers == [200]


async def test_the_wrong_client_authentication_is_the_endpoints_error(env: Env) -> None:
    oauth2 = env.client_credentials(method="client_secret_post")  # the config says basic
    poller = env.poller(make_config(env.api, s={"oauth2": oauth2}))
    await poller.poll_once("s")
    error = await env.error("s")
    assert error.startswith(f"token endpoint {env.oauth.token_url}: invalid_client")
    assert "(HTTP 401)" in error or "(HTTP 400)" in error
    assert env.api.answers == []  # the API never saw a request without a token


async def test_a_token_is_renewed_shortly_before_it_expires(env: Env) -> None:
    env.oauth.expires_in = 2  # used until 1 s before: at most half its life
    poller = env.poller(make_config(env.api, s={"oauth2": env.client_credentials()}))
    await poller.poll_once("s")
    provider = poller.credentials.provider("source:s")
    assert provider is not None and provider.requests == 1
    await poller.poll_once("s")
    assert provider.requests == 1  # still fresh: the cached one
    token = provider._token
    assert token is not None and token.use_until is not None
    await asyncio.sleep(max(0.0, token.use_until - time.monotonic()) + 0.05)
    await poller.poll_once("s")
    assert provider.requests == 2
    assert env.api.answers == [200, 200, 200]  # renewed before the API refused it


async def test_a_401_refreshes_once_and_retries_once(env: Env) -> None:
    poller = env.poller(make_config(env.api, s={"oauth2": env.client_credentials()}))
    await poller.poll_once("s")
    env.oauth.expire_access_tokens()  # revoked upstream before its expires_in
    await poller.poll_once("s")
    assert env.api.answers == [200, 401, 200]
    assert len(env.oauth.requests) == 2
    assert (await env.store.load_poll_state("s")).consecutive_failures == 0
    # An API that refuses every token: one new token, one retry, then the poll's fault.
    env.api.script.route("/items", lambda seen: Reply(401, {"error": "invalid_token"}))
    await poller.poll_once("s")
    assert len(env.oauth.requests) == 3
    assert len(env.api.script.paths()) == 5
    state = await env.store.load_poll_state("s")
    assert state.consecutive_failures == 1 and "HTTP 401" in (state.last_error or "")


# -- refresh_token -----------------------------------------------------------------------------


async def test_a_rotated_refresh_token_is_stored_before_its_access_token_is_used(env: Env) -> None:
    oauth2 = env.refresh()
    initial = oauth2["refresh_token"]
    poller = env.poller(make_config(env.api, s={"oauth2": oauth2}))
    await poller.poll_once("s")
    assert env.oauth.refresh_tokens_presented() == [initial]
    stored = await env.store.load_refresh_token("source:s")
    assert stored is not None and stored.refresh_token != initial
    assert stored.refresh_token.startswith("rt-")
    # The API's request, made with the new access token, found the new refresh token on disk.
    assert env.api.stored_then == [stored.refresh_token]
    assert env.api.answers == [200]
    in_force = await asyncio.to_thread(refresh_tokens_in_force, poller.config)
    assert in_force["source:s"].startswith("the stored one, rotated at 20")

    # A restart (a new poller): the stored token is used, the config's is dead by now.
    env.oauth.expire_access_tokens()
    again = env.poller(make_config(env.api, s={"oauth2": oauth2}))
    await again.poll_once("s")
    assert env.oauth.refresh_tokens_presented()[-1] == stored.refresh_token
    assert env.api.answers[-1] == 200
    newer = await env.store.load_refresh_token("source:s")
    assert newer is not None and newer.refresh_token not in (initial, stored.refresh_token)


async def test_a_new_refresh_token_in_the_config_wins_over_the_stored_one(env: Env) -> None:
    first = env.refresh()
    poller = env.poller(make_config(env.api, api={"oauth2": first}))
    await poller.poll_once("api")
    assert await env.store.load_refresh_token("source:api") is not None
    second = env.refresh()  # the operator authorized again and wrote the new token
    config = make_config(env.api, api={"oauth2": second})
    in_force = await asyncio.to_thread(refresh_tokens_in_force, config)
    assert in_force["source:api"] == "the config's"
    again = env.poller(config)
    await again.poll_once("api")
    assert env.oauth.refresh_tokens_presented()[-1] == second["refresh_token"]
    assert (await env.store.load_poll_state("api")).consecutive_failures == 0


async def test_an_expired_refresh_token_is_a_clear_fault_that_loses_nothing(env: Env) -> None:
    poller = env.poller(make_config(env.api, s={"oauth2": env.refresh()}))
    await poller.poll_once("s")
    stored = await env.store.load_refresh_token("source:s")
    env.oauth.revoke_refresh_tokens()
    env.oauth.expire_access_tokens()
    env.api.items.append({"id": 3, "name": "three"})
    await poller.poll_once("s")
    error = await env.error("s")
    assert error == f"token endpoint {env.oauth.token_url}: invalid_grant (HTTP 400)"
    assert await env.store.load_refresh_token("source:s") == stored
    assert sorted(await env.store.load_poll_versions("s")) == ["1", "2"]
    assert await env.store.list_events(source="s", limit=None) == []


# -- faults of the token endpoint --------------------------------------------------------------

FAULTS = {
    "400": (Fault(400, b'{"error": "invalid_scope", "error_description": "read is not yours"}'),
            "invalid_scope: read is not yours (HTTP 400)"),
    "401": (Fault(401, b'{"error": "invalid_client", "error_description": "who are you?"}'),
            "invalid_client: who are you? (HTTP 401)"),
    "500": (Fault(500, b'{"message": "oops"}'),
            "HTTP 500 without a token (application/json, not an OAuth2 JSON answer)"),
    "html": (Fault(502, b"<html><body>Bad gateway</body></html>", "text/html"),
             "HTTP 502 without a token (text/html, not an OAuth2 JSON answer)"),
    "no token": (Fault(200, b'{"token_type": "Bearer"}'), "HTTP 200 without an access_token"),
}  # fmt: skip


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_a_failing_token_endpoint_is_the_polls_fault(
    env: Env, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    answer, expected = FAULTS[fault]
    poller = env.poller(make_config(env.api, s={"oauth2": env.client_credentials()}))
    await poller.poll_once("s")
    env.oauth.expire_access_tokens()
    env.oauth.faults.append(answer)
    env.api.items.append({"id": 3, "name": "three"})
    result = await poller.poll_once("s")
    assert not result.changed
    error = await env.error("s")
    assert error == f"token endpoint {env.oauth.token_url}: {expected}"
    assert sorted(await env.store.load_poll_versions("s")) == ["1", "2"]
    assert "Traceback" not in caplog.text and CLIENT_SECRET not in caplog.text
    # The endpoint answers again: the change is found, nothing lost.
    await poller.poll_once("s")
    assert sorted(await env.store.load_poll_versions("s")) == ["1", "2", "3"]
    assert (await env.store.load_poll_state("s")).consecutive_failures == 0


async def test_an_unreachable_token_endpoint_is_a_fault(env: Env) -> None:
    oauth2 = {**env.client_credentials(), "token_url": f"http://127.0.0.1:{free_port()}/token"}
    poller = env.poller(make_config(env.api, s={"oauth2": oauth2}))
    await poller.poll_once("s")
    expected = f"token endpoint {oauth2['token_url']}: request failed (ConnectError)"
    assert await env.error("s") == expected


# -- jwt_bearer --------------------------------------------------------------------------------


async def test_jwt_bearer_signs_an_assertion_with_the_service_account_key(
    env: Env, tmp_path: Path
) -> None:
    key = env.oauth.add_service_account("bridge@project.iam.test", users=("ann@example.com",))
    (tmp_path / "key.json").write_text(json.dumps(key))
    oauth2 = {"grant": "jwt_bearer", "token_url": env.oauth.token_url,
              "key_file": str(tmp_path / "key.json"), "scope": ["calendar.readonly"],
              "subject": "ann@example.com"}  # fmt: skip
    poller = env.poller(make_config(env.api, s={"oauth2": oauth2}))
    await poller.poll_once("s")
    assert env.api.answers == [200]
    claims = env.oauth.assertions[-1]
    assert claims["iss"] == "bridge@project.iam.test" and claims["sub"] == "ann@example.com"
    assert claims["aud"] == env.oauth.token_url and claims["scope"] == "calendar.readonly"
    assert claims["exp"] - claims["iat"] == 3600
    # A user the service account may not act as: the endpoint's error, as a fault.
    env.oauth.expire_access_tokens()
    bob = make_config(env.api, s={"oauth2": {**oauth2, "subject": "bob@example.com"}})
    await env.poller(bob).poll_once("s")
    error = await env.error("s")
    assert error.startswith(f"token endpoint {env.oauth.token_url}: invalid_grant")
    assert key["private_key"].splitlines()[1] not in error


# -- static auth and the origin rule -----------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "header", "value"),
    [
        ({"bearer": "tok-123456789"}, "authorization", "Bearer tok-123456789"),
        ({"basic": {"username": "u", "password": "p"}}, "authorization", "Basic dTpw"),
        ({"header": {"X-Api-Key": "key-987654321"}}, "x-api-key", "key-987654321"),
    ],
)
async def test_static_auth_goes_to_the_sources_own_origin_only(
    env: Env, auth: dict[str, Any], header: str, value: str
) -> None:
    with scripted_server() as (other, other_url):
        other.route("/more", Reply(200, {"data": [{"id": 9}]}))
        env.api.script.route(
            "/items",
            Reply(200, {"data": ITEMS}, headers=[("Link", f'<{other_url}/more>; rel="next"')]),
        )
        pages = {"link": True, "allow_origins": [other_url]}
        config = make_config(env.api, None, {"pages": pages}, s=auth)
        await env.poller(config).poll_once("s")
        assert env.api.script.seen[-1].headers[header] == value
        assert header not in other.seen[-1].headers
        assert (await env.store.load_poll_state("s")).items == 3


class FlakyTokens(TokenStore):
    """The real store's tokens, whose next `fail` saves raise as a full disk would."""

    def __init__(self, store: SQLiteStore, fail: int) -> None:
        self.store, self.fail = store, fail

    async def load_refresh_token(self, credential: str) -> StoredRefreshToken | None:
        return await self.store.load_refresh_token(credential)

    async def save_refresh_token(self, token: StoredRefreshToken) -> None:
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("the database cannot be written: disk I/O error")
        await self.store.save_refresh_token(token)


async def test_a_rotation_that_cannot_be_stored_is_not_used_until_it_is(
    env: Env, tmp_path: Path
) -> None:
    config = make_config(env.api, s={"oauth2": env.refresh()})
    oauth2 = config.sources["s"].poll.auth.oauth2  # type: ignore[union-attr]
    assert oauth2 is not None
    provider = TokenProvider("source:s", oauth2, tmp_path, FlakyTokens(env.store, fail=1))
    with pytest.raises(FetchError) as caught:
        await provider.access_token()
    assert caught.value.reason == "auth"
    assert "the rotated refresh token of source:s is not stored yet" in str(caught.value)
    assert await env.store.load_refresh_token("source:s") is None
    # The next use stores it first, and makes no new token request for it.
    token = await provider.access_token()
    stored = await env.store.load_refresh_token("source:s")
    assert stored is not None and env.oauth.live_refresh(stored.refresh_token) is not None
    assert len(env.oauth.requests) == 1 and env.oauth.check(f"Bearer {token.value}")


class StaleOnce(FlakyTokens):
    """The real store's tokens, read once as they were before another replica's rotation."""

    def __init__(self, store: SQLiteStore) -> None:
        super().__init__(store, fail=0)
        self.stale = True

    async def load_refresh_token(self, credential: str) -> StoredRefreshToken | None:
        if self.stale:
            self.stale = False
            return None
        return await self.store.load_refresh_token(credential)


async def test_two_replicas_refreshing_at_once_both_end_with_a_token(
    env: Env, tmp_path: Path
) -> None:
    config = make_config(env.api, s={"oauth2": env.refresh()})
    oauth2 = config.sources["s"].poll.auth.oauth2  # type: ignore[union-attr]
    assert oauth2 is not None and oauth2.refresh_token is not None
    initial = oauth2.refresh_token.get_secret_value()
    first = TokenProvider("source:s", oauth2, tmp_path, env.store)
    second = TokenProvider("source:s", oauth2, tmp_path, StaleOnce(env.store))
    await first.access_token()
    rotated = await env.store.load_refresh_token("source:s")
    assert rotated is not None
    # The second read the store before the first's rotation landed: it sends the dead token,
    # hears invalid_grant, finds the rotated one stored and tries it once.
    token = await second.access_token()
    assert env.oauth.refresh_tokens_presented() == [initial, initial, rotated.refresh_token]
    assert env.oauth.check(f"Bearer {token.value}")
    newest = await env.store.load_refresh_token("source:s")
    assert newest is not None and env.oauth.live_refresh(newest.refresh_token) is not None


def test_a_reload_keeps_a_credentials_provider_unless_its_config_changed(
    oauth: OAuthServer, api: Api, tmp_path: Path
) -> None:
    oauth2 = {"grant": "client_credentials", "token_url": oauth.token_url, "client_id": "app",
              "client_secret": CLIENT_SECRET}  # fmt: skip
    config = make_config(api, {"api": {"oauth2": oauth2}}, a={"credential": "api"},
                         b={"oauth2": oauth2})  # fmt: skip
    credentials = Credentials(None, tmp_path)
    credentials.apply(credential_configs(config), config.polled)
    shared, own = credentials.provider("api"), credentials.provider("source:b")
    assert shared is not None and own is not None and shared is not own
    credentials.apply(credential_configs(config), config.polled)  # the same config again
    assert credentials.provider("api") is shared and credentials.provider("source:b") is own
    changed = make_config(api, {"api": {"oauth2": {**oauth2, "scope": "read"}}},
                          a={"credential": "api"}, b={"oauth2": oauth2})  # fmt: skip
    credentials.apply(credential_configs(changed), changed.polled)
    assert credentials.provider("api") is not shared and credentials.provider("source:b") is own

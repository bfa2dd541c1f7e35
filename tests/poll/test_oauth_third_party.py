"""OAuth2 against oauth2-mock-server (npm), an authorization server nobody here wrote.

It issues access tokens as JWTs signed with the keys it publishes at `/jwks`: the protected
API checks each token's signature and claims with joserfc, so a token the bridge sent is
one that server issued. It rotates the refresh token at every refresh.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bridge.config import parse_config
from bridge.poll.engine import Poller
from bridge.runtime import Runtime
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET
from tests.scripted_server import Reply, Seen, scripted_server
from tests.third_party import free_port, oauth2_mock_server_entry, run_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def mock_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    command = [*oauth2_mock_server_entry(), "-a", "127.0.0.1", "-p", str(port)]
    with run_server(command, port, tmp_path / "oauth2-mock-server.log", "/jwks") as server:
        yield server.url


class JwtApi:
    """Items for a Bearer JWT the mock server signed with the wanted claims; else 401."""

    def __init__(self, issuer: str) -> None:
        self.keys = KeySet.import_key_set(httpx.get(issuer + "/jwks", timeout=5).json())
        self.claims: list[dict[str, Any]] = []

    def answer(self, seen: Seen) -> Reply:
        value = seen.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            token = jwt.decode(value, self.keys)
        except (JoseError, ValueError):
            return Reply(401, {"error": "invalid_token"})
        self.claims.append(dict(token.claims))
        return Reply(200, {"data": [{"id": 1}, {"id": 2}]})


def config_for(url: str, db: Path, oauth2: dict[str, Any]) -> Any:
    data = {
        "database": str(db),
        "sources": {"s": {"poll": {"url": url + "/items", "every": "1m", "id": "id",
                                   "items": "data", "auth": {"oauth2": oauth2}}}},
        "targets": {"t": {"url": "http://127.0.0.1:9/in", "secret": TEST_SECRET}},
    }  # fmt: skip
    return parse_config(yaml.safe_dump(data))


@pytest.mark.parametrize("grant", ["client_credentials", "refresh_token"])
async def test_tokens_from_oauth2_mock_server_open_the_api(
    mock_server: str, store: SQLiteStore, tmp_path: Path, grant: str
) -> None:
    api = JwtApi(mock_server)
    oauth2: dict[str, Any] = {"grant": grant, "token_url": mock_server + "/token",
                              "client_id": "bridge", "client_secret": "mock-secret-1",
                              "scope": "items.read", "params": {"aud": "items-api"}}  # fmt: skip
    if grant == "refresh_token":
        oauth2["refresh_token"] = "rt-initial-0001"
    with scripted_server() as (script, url):
        script.route("/items", api.answer)
        poller = Poller(
            Runtime(config=config_for(url, tmp_path / "bridge.db", oauth2), store=store)
        )
        try:
            await poller.poll_once("s")
            await poller.poll_once("s")
        finally:
            await poller.stop(1.0)
    state = await store.load_poll_state("s")
    assert state.baselined and state.consecutive_failures == 0, state.last_error
    assert [c["scope"] for c in api.claims] == ["items.read", "items.read"]
    assert api.claims[0]["iss"].endswith(f":{httpx.URL(mock_server).port}")  # its own issuer
    if grant == "client_credentials":
        assert api.claims[0]["aud"] == "items-api"  # the extra form parameter reached it
        assert await store.load_refresh_token("source:s") is None
    else:
        stored = await store.load_refresh_token("source:s")
        assert stored is not None and stored.refresh_token != "rt-initial-0001"

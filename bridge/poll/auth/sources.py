"""What a polled source's requests carry to prove who it is, as an `httpx.Auth`.

`bearer`, `basic` and `header` set the request's `Authorization` or headers. `oauth2` (a
source's own credential) and `credential` (a `credentials:` entry) send the credential's
access token as a Bearer token; a 401 answer makes the token invalid, and the request is
sent once more with a new one. The fetch hands the auth only to requests to the source's
own origin (fetch.py): pages on another origin never carry it.

`Credentials` holds one `TokenProvider` per credential for the whole daemon: the sources
that name the same `credentials:` entry share its token and its refreshes; a source's own
`oauth2` is a private credential named `source:NAME` (a name no `credentials:` entry can
have). A reload keeps the providers whose config did not change, token included.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Mapping
from pathlib import Path

import httpx

from bridge.config import Config, PollConfig
from bridge.config.auth import AuthConfig, OAuth2Config
from bridge.poll.auth.tokens import TokenProvider
from bridge.store.tokens import TokenStore


def credential_configs(config: Config) -> dict[str, OAuth2Config]:
    """The OAuth2 config of each top-level `credentials:` entry, by name."""
    return {name: c.oauth2 for name, c in config.credentials.items()}


def credential_name(source: str, auth: AuthConfig | None) -> str | None:
    """The credential a source's token comes from: a `credentials:` name, `source:NAME`
    for a source's own `oauth2`, or None when the source has no OAuth2."""
    if auth is None:
        return None
    if auth.credential is not None:
        return auth.credential
    return f"source:{source}" if auth.oauth2 is not None else None


class HeaderAuth(httpx.Auth):
    """Fixed headers: `bearer` (as `Authorization: Bearer`) or `header`."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = dict(headers)

    def __repr__(self) -> str:
        return f"HeaderAuth({', '.join(self._headers)}: ***)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(self._headers)
        yield request


class BearerTokenAuth(httpx.Auth):
    """A credential's access token; on a 401, a new token and the request sent once more."""

    def __init__(self, provider: TokenProvider) -> None:
        self.provider = provider

    def __repr__(self) -> str:
        return f"BearerTokenAuth({self.provider.name})"

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("an OAuth2 credential needs an async client")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.provider.access_token()
        request.headers["Authorization"] = f"Bearer {token.value}"
        response = yield request
        if response.status_code == 401:
            self.provider.invalidate(token)
            token = await self.provider.access_token()
            request.headers["Authorization"] = f"Bearer {token.value}"
            yield request


def static_auth(auth: AuthConfig) -> httpx.Auth | None:
    """The auth of `bearer`, `basic` or `header`; None for the OAuth2 ones."""
    if auth.bearer is not None:
        return HeaderAuth({"Authorization": f"Bearer {auth.bearer.get_secret_value()}"})
    if auth.basic is not None:
        return httpx.BasicAuth(auth.basic.username, auth.basic.password.get_secret_value())
    if auth.header is not None:
        return HeaderAuth({k: v.get_secret_value() for k, v in auth.header.items()})
    return None


class Credentials:
    """Every credential's token provider, and each polled source's auth."""

    def __init__(self, store: TokenStore | None, base: Path) -> None:
        self._store = store
        self._base = base
        self._providers: dict[str, TokenProvider] = {}
        self._auths: dict[str, httpx.Auth | None] = {}

    def apply(
        self, credentials: Mapping[str, OAuth2Config], sources: Mapping[str, PollConfig]
    ) -> None:
        """Take a config's credentials and polled sources; a provider whose config did not
        change is kept, with its token."""
        wanted = dict(credentials)
        for name, poll in sources.items():
            if poll.auth is not None and poll.auth.oauth2 is not None:
                wanted[f"source:{name}"] = poll.auth.oauth2
        kept = self._providers
        self._providers = {
            name: kept[name]
            if name in kept and kept[name].config == oauth2
            else TokenProvider(name, oauth2, self._base, self._store)
            for name, oauth2 in wanted.items()
        }
        self._auths = {name: self._auth(name, poll) for name, poll in sources.items()}

    def _auth(self, source: str, poll: PollConfig) -> httpx.Auth | None:
        if poll.auth is None:
            return None
        name = credential_name(source, poll.auth)
        if name is None:
            return static_auth(poll.auth)
        return BearerTokenAuth(self._providers[name])

    def auth_for(self, source: str) -> httpx.Auth | None:
        """What `source`'s requests to its own origin carry (None: nothing beyond its headers)."""
        return self._auths.get(source)

    def provider(self, name: str) -> TokenProvider | None:
        """The token provider of a credential (`source:NAME` for a source's own)."""
        return self._providers.get(name)

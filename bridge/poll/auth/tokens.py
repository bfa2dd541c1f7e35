"""The access token of one OAuth2 credential, shared by every source that names it.

A `TokenProvider` keeps the credential's access token in memory until shortly before its
`expires_in` runs out (`expiry_margin`, at most half its life) and asks for a new one in one
task at a time: the sources sharing the credential wait for the same request, never make
one each.
A 401 from an upstream invalidates the token it was sent (`invalidate`): the next caller
asks for a new one.

With the `refresh_token` grant the refresh token in force is the store's when the endpoint
rotated it since the config's was written (store/tokens.py: the row names the hash of the
config's token it descends from), else the config's. It is read from the store before each
refresh, so that a token another replica (or `bridge poll --dry-run`) rotated is the one
sent; a refresh refused with `invalid_grant` reads it once more and, when another process
stored a newer one meanwhile (the race of two refreshes at once), tries that one once. A
rotated refresh token is written to the store in a durable commit of its own before
the access token that came with it is used; should that write fail, the new refresh token
stays in memory (the old one may be dead already), the poll is a fault, and the write is
tried again before the next use.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from bridge.config.auth import OAuth2Config
from bridge.errors import FetchError, StoreError
from bridge.events import now_ms
from bridge.logs import redact
from bridge.poll.auth.grants import TokenAnswer, TokenError, TokenRequests
from bridge.store.tokens import StoredRefreshToken, TokenStore, initial_hash

log = logging.getLogger("bridge.poll.auth")


@dataclass(frozen=True, slots=True)
class AccessToken:
    """An access token and until when (monotonic seconds) it is used; None: until a 401."""

    value: str = field(repr=False)
    use_until: float | None

    def is_fresh(self, now: float) -> bool:
        return self.use_until is None or now < self.use_until


@dataclass(frozen=True, slots=True)
class InForce:
    """Which refresh token a credential uses: the config's, or the store's rotated one."""

    stored: StoredRefreshToken | None = None

    @property
    def text(self) -> str:
        if self.stored is None:
            return "the config's"
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.stored.rotated_ms / 1000))
        return f"the stored one, rotated at {at}"


async def refresh_token_in_force(
    store: TokenStore | None, credential: str, config: OAuth2Config
) -> InForce:
    """Which refresh token `credential` starts from: the store's when it rotated the
    config's current one, else the config's (a new one in the config wins)."""
    if store is None or config.refresh_token is None:
        return InForce()
    stored = await store.load_refresh_token(credential)
    if stored is None or stored.initial_hash != initial_hash(
        config.refresh_token.get_secret_value()
    ):
        return InForce()
    return InForce(stored)


class TokenProvider:
    """The access token of one credential (a `credentials:` entry, or a source's own)."""

    def __init__(
        self, name: str, config: OAuth2Config, base: Path, store: TokenStore | None
    ) -> None:
        self.name = name
        self.config = config
        self._store = store
        self._requests = TokenRequests(config, base)
        # The one request in flight for a new token: every caller meanwhile awaits it.
        self._renewing: asyncio.Future[AccessToken] | None = None
        self._token: AccessToken | None = None
        initial = config.refresh_token.get_secret_value() if config.refresh_token else None
        self._initial_hash = initial_hash(initial) if initial else ""
        self._refresh = initial  # the refresh token in force, as last known
        self._unsaved: StoredRefreshToken | None = None  # rotated, not yet in the store
        self.requests = 0  # token requests made

    async def access_token(self) -> AccessToken:
        """A fresh access token: the cached one, or a new one (one request at a time).
        Raises FetchError (reason `auth`) when the token endpoint does not give one."""
        token = self._token
        if token is not None and self._unsaved is None and token.is_fresh(time.monotonic()):
            return token
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.ensure_future(self._renew())
            self._renewing.add_done_callback(_retrieve)
        # Shielded: a poll that times out (or a stop) while its token is asked for must not
        # cut the request between the endpoint's answer and the store's commit of a rotation.
        return await asyncio.shield(self._renewing)

    async def _renew(self) -> AccessToken:
        if self._unsaved is not None:
            await self._save(self._unsaved)
        token = self._token
        if token is not None and token.is_fresh(time.monotonic()):
            return token
        self._token = await self._new_token()
        return self._token

    def invalidate(self, token: AccessToken) -> None:
        """The upstream refused `token` (401): ask for a new one next time."""
        if self._token is token:
            self._token = None

    async def _refresh_token(self) -> str | None:
        if self.config.grant != "refresh_token":
            return None
        try:
            in_force = await refresh_token_in_force(self._store, self.name, self.config)
        except StoreError as exc:
            log.warning("%s: the stored refresh token cannot be read: %s", self.name, exc)
            return self._refresh
        if in_force.stored is not None:
            self._refresh = in_force.stored.refresh_token
            redact([self._refresh])
        return self._refresh

    async def _new_token(self) -> AccessToken:
        refresh = await self._refresh_token()
        started = time.monotonic()
        self.requests += 1
        try:
            answer = await self._requests.request(refresh)
        except TokenError as exc:
            newer = await self._rotated_meanwhile(exc, refresh)
            if newer is None:
                raise FetchError(str(exc), status=exc.status, reason="auth") from None
            refresh = newer
            self.requests += 1
            try:
                answer = await self._requests.request(refresh)
            except TokenError as again:
                raise FetchError(str(again), status=again.status, reason="auth") from None
        token = AccessToken(answer.access_token, self._use_until(started, answer))
        log.debug("%s: new access token (%s)", self.name, _life(answer))
        if answer.refresh_token is not None and answer.refresh_token != refresh:
            self._token = token  # kept, but used only once the rotation is stored
            await self._rotated(answer)
        return token

    async def _rotated_meanwhile(self, exc: TokenError, sent: str | None) -> str | None:
        """After `invalid_grant` for the refresh token `sent`: the one another process (a
        replica, a dry run) rotated and stored meanwhile, to be tried once; else None."""
        if self.config.grant != "refresh_token" or exc.error != "invalid_grant":
            return None
        newer = await self._refresh_token()
        if newer is None or newer == sent:
            return None
        log.info("%s: the refresh token was rotated elsewhere; trying the stored one", self.name)
        return newer

    async def _rotated(self, answer: TokenAnswer) -> None:
        """Keep a rotated refresh token: in memory at once, durably before any use."""
        assert answer.refresh_token is not None
        self._refresh = answer.refresh_token
        if self.config.grant != "refresh_token":
            return  # a client_credentials endpoint's refresh token is never used
        stored = StoredRefreshToken(self.name, self._initial_hash, answer.refresh_token, now_ms())
        self._unsaved = stored
        await self._save(stored)
        log.info(
            "%s: the token endpoint rotated the refresh token; the new one is stored", self.name
        )

    async def _save(self, stored: StoredRefreshToken) -> None:
        if self._store is None:
            self._unsaved = None  # nowhere to keep it: this process's memory is all there is
            return
        try:
            await self._store.save_refresh_token(stored)
        except StoreError as exc:
            raise FetchError(
                f"the rotated refresh token of {self.name} is not stored yet ({exc}):"
                " kept in memory, stored before the next use",
                reason="auth",
            ) from None
        self._unsaved = None

    def _use_until(self, started: float, answer: TokenAnswer) -> float | None:
        if answer.expires_in_s is None:
            return None
        margin = min(self.config.expiry_margin_s, answer.expires_in_s / 2)
        return started + answer.expires_in_s - margin


def _retrieve(task: asyncio.Future[AccessToken]) -> None:
    """Mark a renewal's failure as seen: its callers may all have given up waiting."""
    if not task.cancelled():
        task.exception()


def _life(answer: TokenAnswer) -> str:
    if answer.expires_in_s is None:
        return "no expires_in: used until a 401"
    return f"expires in {answer.expires_in_s:g} s"

"""How a polled source proves who it is: the `auth:` of a source and the top-level
`credentials:` several sources share.

    auth: {bearer: TOKEN}
    auth: {basic: {username: U, password: P}}
    auth: {header: {X-Api-Key: KEY}}
    auth: {oauth2: {grant: client_credentials, token_url: ..., client_id: ..., ...}}
    auth: {credential: NAME}          # a `credentials:` entry, one token shared by its users

An OAuth2 credential has one grant: `client_credentials`, `refresh_token` (the initial
refresh token; a rotated one is kept in the store) or `jwt_bearer` (RFC 7523: an assertion
signed with a service account's key, `subject` for domain-wide delegation). Secrets are
`SecretStr`: never in reprs, errors or output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, model_validator

from bridge.config.values import HttpURL, _Model, _one_or_many

Grant = Literal["client_credentials", "refresh_token", "jwt_bearer"]
ClientAuth = Literal["client_secret_basic", "client_secret_post"]


class BasicAuth(_Model):
    username: str
    password: SecretStr


class OAuth2Config(_Model):
    """An OAuth2 client: how to get an access token from `token_url`."""

    grant: Grant = "client_credentials"
    token_url: HttpURL
    client_id: str | None = None
    client_secret: SecretStr | None = None
    # How the client id and secret reach the token endpoint (RFC 6749 2.3.1).
    client_auth: ClientAuth = "client_secret_basic"
    scope: Annotated[list[str], BeforeValidator(_one_or_many)] = []
    audience: str | None = None
    # Extra form parameters of the token request (e.g. `resource`).
    params: dict[str, str] = Field({}, repr=False)
    # grant refresh_token: the first refresh token; once the endpoint rotates it, the
    # store's newer one is used instead.
    refresh_token: SecretStr | None = None
    # grant jwt_bearer: a service account's JSON key file (Google's layout: client_email,
    # private_key, private_key_id, token_uri), relative to the config file.
    key_file: Path | None = None
    # grant jwt_bearer: the user to act as (domain-wide delegation: the assertion's `sub`).
    subject: str | None = None

    @model_validator(mode="after")
    def _check_grant(self) -> OAuth2Config:
        if self.grant == "client_credentials" and not self.client_id:
            raise ValueError("grant client_credentials needs client_id")
        if self.grant == "refresh_token" and self.refresh_token is None:
            raise ValueError("grant refresh_token needs refresh_token")
        if self.grant == "jwt_bearer" and self.key_file is None:
            raise ValueError("grant jwt_bearer needs key_file")
        return self


class Credential(_Model):
    """A top-level `credentials:` entry, shared by the sources that name it."""

    oauth2: OAuth2Config


class AuthConfig(_Model):
    """A polled source's `auth:`: exactly one of its keys."""

    bearer: SecretStr | None = None
    basic: BasicAuth | None = None
    header: dict[str, SecretStr] | None = None
    oauth2: OAuth2Config | None = None
    credential: str | None = None

    @model_validator(mode="after")
    def _check_one(self) -> AuthConfig:
        given = [
            k
            for k in ("bearer", "basic", "header", "oauth2", "credential")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "auth needs exactly one of bearer, basic, header, oauth2, credential"
                + (f" (has {', '.join(given)})" if given else "")
            )
        return self

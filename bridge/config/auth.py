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

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, model_validator

from bridge.config.values import Duration, HttpURL, _Model, _one_or_many

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
    # An access token is used until this long before its `expires_in` runs out (at most
    # half its life), then a new one is asked for.
    expiry_margin_s: Duration = Field(60.0, alias="expiry_margin")
    # How long a token request may take.
    timeout_s: Duration = Field(10.0, alias="timeout")

    def secrets(self) -> Iterator[str]:
        """The secret values written in this config (not the key file's: read at run time)."""
        for value in (self.client_secret, self.refresh_token):
            if value is not None:
                yield value.get_secret_value()

    @model_validator(mode="after")
    def _check_grant(self) -> OAuth2Config:
        if self.grant == "client_credentials" and not self.client_id:
            raise ValueError("grant client_credentials needs client_id")
        if self.grant == "refresh_token" and self.refresh_token is None:
            raise ValueError("grant refresh_token needs refresh_token")
        if self.grant == "jwt_bearer" and self.key_file is None:
            raise ValueError("grant jwt_bearer needs key_file")
        return self


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """What the jwt_bearer grant reads from a service account's JSON key file."""

    client_email: str
    private_key: str = field(repr=False)
    private_key_id: str | None = None
    token_uri: str | None = None


def key_path(key_file: Path, base: Path) -> Path:
    """Where a `key_file` is: as written when absolute, else relative to `base`."""
    path = key_file.expanduser()
    return path if path.is_absolute() else base / path


def load_service_key(key_file: Path, base: Path) -> ServiceKey:
    """Read a service account's JSON key (Google's layout); ValueError in one line naming
    what is wrong, never the key."""
    path = key_path(key_file, base)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc.__class__.__name__}") from None
    except ValueError:
        raise ValueError(f"{path} is not a JSON key file") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON key file")
    email, key = data.get("client_email"), data.get("private_key")
    if not isinstance(email, str) or not email:
        raise ValueError(f"{path} has no client_email")
    if not isinstance(key, str) or "-----BEGIN" not in key:
        raise ValueError(f"{path} has no PEM private_key")
    key_id, token_uri = data.get("private_key_id"), data.get("token_uri")
    return ServiceKey(
        email,
        key,
        key_id if isinstance(key_id, str) else None,
        token_uri if isinstance(token_uri, str) else None,
    )


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

    def secrets(self) -> Iterator[str]:
        """The secret values written in this `auth:`."""
        if self.bearer is not None:
            yield self.bearer.get_secret_value()
        if self.basic is not None:
            yield self.basic.password.get_secret_value()
        for value in (self.header or {}).values():
            yield value.get_secret_value()
        if self.oauth2 is not None:
            yield from self.oauth2.secrets()

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

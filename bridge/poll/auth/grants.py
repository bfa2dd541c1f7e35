"""One token request of an OAuth2 credential, by its grant, through Authlib.

Authlib's `AsyncOAuth2Client` builds the request (RFC 6749: a form POST, the client
authenticated by HTTP Basic or in the body) and reads the answer; its RFC 7523 helper signs
the jwt_bearer assertion. What is left here is which parameters each grant sends and how a
failed answer becomes one line: the endpoint's `error` and `error_description`, or its HTTP
status and what it sent instead of JSON. No line holds a secret: the values the request
sent and the endpoint answered are masked in it, should an endpoint echo them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from authlib.oauth2.rfc7523 import JWTBearerGrant
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from bridge.config.auth import OAuth2Config, ServiceKey, load_service_key
from bridge.logs import redact
from bridge.masking import mask_url
from bridge.poll.transport import USER_AGENT

# How long a jwt_bearer assertion is valid (RFC 7523 and Google: at most an hour).
ASSERTION_LIFE_S = 3600
# How much of an endpoint's `error_description` a fault shows.
MAX_DESCRIPTION = 200
MASK = "***"


class TokenError(Exception):
    """A token request failed; the message is one line without a secret."""

    def __init__(self, message: str, status: int | None = None, error: str | None = None):
        super().__init__(message)
        self.status = status
        self.error = error  # the endpoint's `error` code (`invalid_grant`, ...), if it said one


@dataclass(slots=True)
class TokenAnswer:
    """A token endpoint's answer: the access token and what came with it."""

    access_token: str = field(repr=False)
    token_type: str
    expires_in_s: float | None
    refresh_token: str | None = field(default=None, repr=False)


def _one_line(text: object, secrets: list[str]) -> str:
    line = " ".join(str(text).split())[:MAX_DESCRIPTION]
    for secret in secrets:
        if secret:
            line = line.replace(secret, MASK)
    return "".join(c if c.isprintable() else "?" for c in line)


class TokenRequests:
    """Asks one credential's token endpoint for access tokens."""

    def __init__(self, config: OAuth2Config, base: Path) -> None:
        self.config = config
        self.base = base
        self.where = f"token endpoint {mask_url(config.token_url)}"
        self._key: ServiceKey | None = None

    def service_key(self) -> ServiceKey:
        """The jwt_bearer grant's key, read once (TokenError if it cannot be read)."""
        if self._key is None:
            assert self.config.key_file is not None
            try:
                self._key = load_service_key(self.config.key_file, self.base)
            except ValueError as exc:
                raise TokenError(f"key_file: {exc}") from None
            redact([self._key.private_key])
        return self._key

    def _form(self, refresh_token: str | None) -> dict[str, Any]:
        """The grant's own parameters of the request body."""
        c = self.config
        form: dict[str, Any] = dict(c.params)
        if c.audience and c.grant != "jwt_bearer":
            form["audience"] = c.audience
        if c.grant == "refresh_token":
            form["refresh_token"] = refresh_token
            if c.scope:
                form["scope"] = " ".join(c.scope)
        elif c.grant == "client_credentials":
            if c.scope:
                form["scope"] = " ".join(c.scope)
        else:
            form["assertion"] = self._assertion()
        return form

    def _assertion(self) -> str:
        """The RFC 7523 assertion: RS256 over iss, scope, aud (the token endpoint), iat, exp
        and `sub` when the credential acts as a user (domain-wide delegation)."""
        key, c = self.service_key(), self.config
        now = int(time.time())
        claims = {"scope": " ".join(c.scope)} if c.scope else {}
        header = {"alg": "RS256", "typ": "JWT"}
        if key.private_key_id:
            header["kid"] = key.private_key_id
        try:
            signed = JWTBearerGrant.sign(
                RSAKey.import_key(key.private_key),
                issuer=key.client_email,
                audience=c.audience or c.token_url,
                subject=c.subject,
                issued_at=now,
                expires_at=now + ASSERTION_LIFE_S,
                claims=claims,
                header=header,
            )
        except (ValueError, TypeError, JoseError) as exc:
            reason = type(exc).__name__
            raise TokenError(f"key_file: the private_key cannot sign ({reason})") from None
        return signed.decode() if isinstance(signed, bytes) else str(signed)

    def _client(self, seen: list[httpx.Response]) -> AsyncOAuth2Client:
        c = self.config

        async def keep(response: httpx.Response) -> None:
            seen.append(response)

        method = c.client_auth if c.client_id else "none"
        return AsyncOAuth2Client(
            client_id=c.client_id,
            client_secret=c.client_secret.get_secret_value() if c.client_secret else None,
            token_endpoint_auth_method=method,
            timeout=c.timeout_s,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            event_hooks={"response": [keep]},
        )

    async def request(self, refresh_token: str | None = None) -> TokenAnswer:
        """Ask for an access token (with `refresh_token` for that grant); TokenError when
        the endpoint cannot be reached or answers anything but a token."""
        grant = self.config.grant
        grant_type = JWTBearerGrant.GRANT_TYPE if grant == "jwt_bearer" else grant
        form = self._form(refresh_token)
        secrets = [str(v) for k, v in form.items() if k in ("refresh_token", "assertion")]
        if self.config.client_secret is not None:
            secrets.append(self.config.client_secret.get_secret_value())
        seen: list[httpx.Response] = []
        try:
            async with self._client(seen) as client:
                token = await client.fetch_token(
                    self.config.token_url, grant_type=grant_type, **form
                )
        except OAuthError as exc:
            status = seen[-1].status_code if seen else None
            error = _one_line(exc.error, secrets)
            about = f": {_one_line(exc.description, secrets)}" if exc.description else ""
            message = f"{self.where}: {error}{about} (HTTP {status})"
            raise TokenError(message, status, str(exc.error)) from None
        except httpx.TimeoutException:
            raise TokenError(f"{self.where}: timed out after {self.config.timeout_s:g} s") from None
        except (httpx.HTTPStatusError, ValueError) as exc:
            raise self._not_a_token(seen, exc) from None
        except httpx.HTTPError as exc:
            raise TokenError(f"{self.where}: request failed ({type(exc).__name__})") from None
        return self._answer(token, seen, secrets)

    def _not_a_token(self, seen: list[httpx.Response], exc: Exception) -> TokenError:
        if not seen:
            return TokenError(f"{self.where}: request failed ({type(exc).__name__})")
        response = seen[-1]
        kind = response.headers.get("content-type", "").split(";")[0].strip() or "no type"
        return TokenError(
            f"{self.where}: HTTP {response.status_code} without a token"
            f" ({_one_line(kind, [])}, not an OAuth2 JSON answer)",
            response.status_code,
        )

    def _answer(self, token: Any, seen: list[httpx.Response], secrets: list[str]) -> TokenAnswer:
        status = seen[-1].status_code if seen else None
        access = token.get("access_token") if isinstance(token, dict) else None
        if not isinstance(access, str) or not access or status is None or status >= 300:
            raise TokenError(f"{self.where}: HTTP {status} without an access_token", status)
        redact([access])
        expires = token.get("expires_in")
        try:
            expires_in_s = float(expires) if expires is not None else None
        except (TypeError, ValueError):
            expires_in_s = None
        refresh = token.get("refresh_token")
        if not isinstance(refresh, str) or not refresh:
            refresh = None
        else:
            redact([refresh])
        token_type = token.get("token_type")
        return TokenAnswer(
            access,
            str(token_type) if isinstance(token_type, str) and token_type else "Bearer",
            expires_in_s if expires_in_s is not None and expires_in_s > 0 else None,
            refresh,
        )

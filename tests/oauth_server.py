"""A real OAuth2 authorization server for the tests, built from Authlib's server classes.

Authlib's `AuthorizationServer` and its grants (RFC 6749 client_credentials and
refresh_token, RFC 7523 jwt_bearer) do the protocol: client authentication by
`client_secret_basic` or `client_secret_post` (each client allows one), scope checks,
assertion signatures and claims, error answers. This module only keeps the clients and
tokens in memory, serves the token endpoint over HTTP on 127.0.0.1 (Starlette on uvicorn,
in a thread), and can rotate refresh tokens (the old one revoked at once), expire access
and refresh tokens, and answer the next requests with a scripted fault instead.

`OAuthServer.check(authorization)` says whether a Bearer header carries a live access token:
the protected API of a test (a scripted server route) asks it.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    OAuth2Request,
    TokenMixin,
)
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant, RefreshTokenGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7523 import JWTBearerGrant
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.helpers import serve_app


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    client_secret: str = ""
    auth_method: str = "client_secret_basic"
    grants: tuple[str, ...] = ("client_credentials", "refresh_token")
    public_key: str | None = None  # PEM, for jwt_bearer assertions
    users: tuple[str, ...] = ()  # the subjects a jwt_bearer client may act as

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(client_secret.encode(), self.client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grants


@dataclass
class Token(TokenMixin):  # type: ignore[misc]
    client_id: str
    access_token: str | None
    refresh_token: str | None
    scope: str
    expires_in: int
    issued_at: float = field(default_factory=time.time)
    revoked: bool = False  # the access token
    refresh_revoked: bool = False
    user: str = "user"

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked


class _FormRequest(OAuth2Request):  # type: ignore[misc]
    def __init__(self, method: str, uri: str, headers: Any, form: dict[str, str]):
        super().__init__(method, uri, headers=headers)
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _ClientCredentials(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class _RefreshToken(RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def issue_token(self, user: Any, refresh_token: Token) -> dict[str, Any]:
        scope = self.request.payload.scope or refresh_token.get_scope()
        return self.generate_token(  # type: ignore[no-any-return]
            user=user, scope=scope, include_refresh_token=self.server.owner.rotate
        )

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        return self.server.owner.live_refresh(refresh_token)

    def authenticate_user(self, refresh_token: Token) -> str:
        return refresh_token.user

    def revoke_old_credential(self, refresh_token: Token) -> None:
        if self.server.owner.rotate:
            refresh_token.refresh_revoked = True


class _JWTBearer(JWTBearerGrant):  # type: ignore[misc]
    def resolve_issuer_client(self, issuer: str) -> Client:
        return self.server.owner.clients[issuer]

    def resolve_client_public_key(self, client: Client) -> RSAKey:
        return RSAKey.import_key(client.public_key)

    def authenticate_user(self, subject: str) -> str | None:
        client = self.request.client  # resolved from the assertion's `iss` before
        return subject if client is not None and subject in client.users else None

    def get_audiences(self) -> list[str]:
        return [self.server.owner.token_url]

    def has_granted_permission(self, client: Client, user: str) -> bool:
        return user in client.users

    def process_assertion_claims(self, assertion: str) -> Any:
        claims = super().process_assertion_claims(assertion)
        self.server.owner.assertions.append(dict(claims))
        return claims


class _Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, owner: OAuthServer) -> None:
        super().__init__()
        self.owner = owner

    def query_client(self, client_id: str) -> Client | None:
        return self.owner.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.owner.save(token, request)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def create_oauth2_request(self, request: _FormRequest) -> _FormRequest:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, Any]:
        return status, body, headers


@dataclass
class Fault:
    """An answer the token endpoint gives instead of Authlib's, once."""

    status: int
    body: bytes
    content_type: str = "application/json"


class OAuthServer:
    """Authlib's authorization server with in-memory clients and tokens, on HTTP."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clients: dict[str, Client] = {}
        self.tokens: list[Token] = []
        self.rotate = True
        self.expires_in = 3600
        self.faults: list[Fault] = []
        self.requests: list[dict[str, Any]] = []  # each: grant_type, form, basic, status
        self.assertions: list[dict[str, Any]] = []
        self.token_url = ""
        self.server = _Server(self)
        generator = BearerTokenGenerator(
            lambda *a, **k: "at-" + secrets.token_urlsafe(18),
            lambda *a, **k: "rt-" + secrets.token_urlsafe(18),
            lambda client, grant_type: self.expires_in,
        )
        self.server.register_token_generator("default", generator)
        self.server.register_grant(_ClientCredentials)
        self.server.register_grant(_RefreshToken)
        self.server.register_grant(_JWTBearer)

    # -- what a test sets up ----------------------------------------------------------------

    def add_client(self, client_id: str, secret: str = "", **kw: Any) -> Client:
        client = Client(client_id, secret, **kw)
        self.clients[client_id] = client
        return client

    def add_service_account(self, email: str, users: tuple[str, ...] = ()) -> dict[str, str]:
        """A jwt_bearer client and its key file's content (Google's layout)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        public = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        self.add_client(email, grants=(JWTBearerGrant.GRANT_TYPE,), public_key=public, users=users)
        return {
            "type": "service_account",
            "client_email": email,
            "private_key": private,
            "private_key_id": "key-1",
            "token_uri": self.token_url,
        }

    def issue_refresh_token(self, client_id: str, scope: str = "") -> str:
        """A refresh token as an authorization code flow would have left it."""
        refresh = "rt-" + secrets.token_urlsafe(18)
        with self.lock:
            self.tokens.append(Token(client_id, None, refresh, scope, self.expires_in))
        return refresh

    def expire_access_tokens(self) -> None:
        with self.lock:
            for token in self.tokens:
                token.revoked = True

    def revoke_refresh_tokens(self) -> None:
        with self.lock:
            for token in self.tokens:
                token.refresh_revoked = True

    # -- what the grants and the API ask ------------------------------------------------------

    def live_refresh(self, refresh_token: str) -> Token | None:
        with self.lock:
            for token in self.tokens:
                if token.refresh_token == refresh_token and not token.refresh_revoked:
                    return token
        return None

    def save(self, token: dict[str, Any], request: OAuth2Request) -> None:
        with self.lock:
            self.tokens.append(
                Token(
                    request.client.client_id,
                    token["access_token"],
                    token.get("refresh_token"),
                    token.get("scope", ""),
                    token["expires_in"],
                    user=request.user or "user",
                )
            )

    def check(self, authorization: str | None) -> bool:
        """Whether `Authorization: Bearer X` carries a live access token."""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        value = authorization.removeprefix("Bearer ")
        with self.lock:
            return any(
                t.access_token == value and not t.revoked and not t.is_expired()
                for t in self.tokens
            )

    def refresh_tokens_presented(self) -> list[str]:
        return [r["form"].get("refresh_token", "") for r in self.requests]

    # -- HTTP ---------------------------------------------------------------------------------

    async def token_endpoint(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        headers = request.headers  # case-insensitive, as Authlib reads `Authorization`
        record = {"grant_type": form.get("grant_type"), "form": form,
                  "basic": headers.get("authorization", "").startswith("Basic ")}  # fmt: skip
        with self.lock:
            self.requests.append(record)
            fault = self.faults.pop(0) if self.faults else None
        if fault is not None:
            record["status"] = fault.status
            return Response(fault.body, fault.status, media_type=fault.content_type)
        # Authlib refuses http:// request URIs; the test endpoint is on loopback.
        uri = self.token_url.replace("http://", "https://", 1)
        oauth_request = _FormRequest("POST", uri, headers, form)
        status, body, answer_headers = self.server.create_token_response(oauth_request)
        record["status"] = status
        return JSONResponse(body, status, headers=dict(answer_headers))


@contextlib.contextmanager
def oauth_server() -> Iterator[OAuthServer]:
    """An `OAuthServer` serving its token endpoint at `token_url` on 127.0.0.1."""
    server = OAuthServer()
    app = Starlette(routes=[Route("/token", server.token_endpoint, methods=["POST"])])
    with serve_app(app) as url:
        server.token_url = f"{url}/token"
        yield server

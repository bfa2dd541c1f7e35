"""Sessions of the admin pages: signed cookies, their CSRF tokens, and logging out.

A session is a random id and an expiry, signed with HMAC-SHA256 into the cookie
`bridge_session` (`<id>.<expires_ms>.<signature>`); nothing is kept on the server but the
ids of sessions logged out before their expiry: here, and in the store (`revoke_session`,
asked by auth.py on every request), so that a logout holds after a restart and on every
replica sharing the database. The signing key is derived from
`server.admin_token`, so changing the token ends every session; without a token (a
loopback-only server) it is random per process. A session's CSRF token is an HMAC of its
id under the same key: a form carries it, and a page of another origin can neither read
it nor make one.

The session id names who did an action in the logs: it identifies a login without giving
anything away (a cookie needs the signature, and the token is never logged).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

COOKIE = "bridge_session"
_KEY_LABEL = b"bridge admin session v1"


@dataclass(slots=True, frozen=True)
class Session:
    """One signed-in browser: its id and when its cookie expires."""

    id: str
    expires_ms: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Sessions:
    """Issues, reads, revokes sessions and their CSRF tokens under one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._revoked: dict[str, int] = {}  # id -> expiry, dropped once expired

    @classmethod
    def for_token(cls, token: str | None) -> Sessions:
        """Sessions keyed by `token` (a random key when there is none)."""
        if token is None:
            return cls(secrets.token_bytes(32))
        return cls(hmac.new(token.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest())

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode("ascii"), hashlib.sha256).digest())

    def issue(self, now_ms: int, lifetime_s: float) -> tuple[Session, str]:
        """A new session lasting `lifetime_s`, and the cookie value that carries it."""
        session = Session(secrets.token_urlsafe(12), now_ms + round(lifetime_s * 1000))
        return session, self.cookie_value(session)

    def cookie_value(self, session: Session) -> str:
        """The signed cookie value of `session`."""
        body = f"{session.id}.{session.expires_ms}"
        return f"{body}.{self._sign(body)}"

    def read(self, value: str | None, now_ms: int) -> Session | None:
        """The session a cookie value carries, or None when it is missing, forged, expired or
        logged out."""
        if not value or value.count(".") != 2 or not value.isascii():
            return None
        sid, expires, signature = value.split(".")
        if not hmac.compare_digest(signature, self._sign(f"{sid}.{expires}")):
            return None
        if not expires.isdigit() or int(expires) <= now_ms or sid in self._revoked:
            return None
        return Session(sid, int(expires))

    def csrf(self, session: Session) -> str:
        """The CSRF token that the forms of `session` carry."""
        return self._sign(f"csrf:{session.id}")

    def is_csrf(self, session: Session, given: str | None) -> bool:
        """True when `given` is the CSRF token of `session` (compared in constant time)."""
        if given is None or not given.isascii():
            return False
        return hmac.compare_digest(given, self.csrf(session))

    def revoke(self, session: Session, now_ms: int) -> None:
        """Log `session` out: its cookie is refused from now on (until it would expire)."""
        self._revoked = {sid: ms for sid, ms in self._revoked.items() if ms > now_ms}
        self._revoked[session.id] = session.expires_ms

"""The schemes that prove a request with a shared secret sent as it is, as pure functions.

No signature here: the sender puts one of the source's secrets in a header, and the bridge
compares it with each secret in constant time (`hmac.compare_digest`). That is all GitLab
(`X-Gitlab-Token`), Prometheus Alertmanager and Grafana (`Authorization: Bearer` or Basic)
and many other senders offer. Such a request can be replayed by whoever sees it: these
schemes belong behind TLS, and `allow_from` narrows who may send.

Like the signature schemes (`schemes.py`), each `verify_*` takes the secrets, the headers
(names lower-cased) and raises `VerificationError` with a reason that never holds a secret.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Mapping, Sequence

from bridge.config import WebhookConfig
from bridge.errors import VerificationError

Headers = Mapping[str, str]
Verifier = Callable[[Headers, bytes, float], None]


def same(given: str, expected: str) -> bool:
    """Constant-time equality of a received value and the expected one."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def require(headers: Headers, name: str) -> str:
    """The value of header `name`, or VerificationError when it is missing or empty."""
    value = headers.get(name)
    if not value:
        raise VerificationError(f"the {name} header is missing")
    return value


def _matches_one(given: str, secrets: Sequence[str]) -> bool:
    # Every secret is compared, a match or not: the time does not say which one matched.
    return any([same(given, secret) for secret in secrets])


def verify_token(
    secrets: Sequence[str], headers: Headers, *, header: str, prefix: str = ""
) -> None:
    """A shared token in one header, after an optional prefix: `X-Webhook-Token: <secret>`."""
    name = header.lower()
    given = require(headers, name).strip()
    if not given.startswith(prefix):
        raise VerificationError(f"the {name} header does not start with the expected prefix")
    if _matches_one(given[len(prefix) :], secrets):
        return
    raise VerificationError(f"the {name} header matches no secret")


def verify_gitlab(secrets: Sequence[str], headers: Headers) -> None:
    """GitLab: `X-Gitlab-Token` holds the hook's secret token as it is."""
    if _matches_one(require(headers, "x-gitlab-token").strip(), secrets):
        return
    raise VerificationError("the x-gitlab-token header matches no secret")


def _authorization(headers: Headers, scheme: str) -> str:
    """The credentials of `Authorization: <scheme> <credentials>` (the scheme in any case)."""
    value = require(headers, "authorization").strip()
    given_scheme, _, credentials = value.partition(" ")
    if given_scheme.lower() != scheme.lower() or not credentials.strip():
        raise VerificationError(f"the authorization header is not {scheme} credentials")
    return credentials.strip()


def verify_bearer(secrets: Sequence[str], headers: Headers) -> None:
    """`Authorization: Bearer <secret>` (RFC 6750)."""
    if _matches_one(_authorization(headers, "Bearer"), secrets):
        return
    raise VerificationError("the authorization bearer token matches no secret")


def verify_basic(secrets: Sequence[str], headers: Headers) -> None:
    """`Authorization: Basic base64(user:password)` (RFC 7617); each secret is `user:password`."""
    encoded = _authorization(headers, "Basic")
    try:
        pair = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        reason = "the authorization header's Basic credentials are not base64"
        raise VerificationError(reason) from None
    if _matches_one(pair, secrets):
        return
    raise VerificationError("the authorization basic credentials match no secret")


def build_verifier(hook: WebhookConfig, secrets: Sequence[str]) -> Verifier:
    """The verifier of a source whose scheme sends a secret as it is (token, gitlab, bearer,
    basic), with its secrets bound."""
    match hook.verify:
        case "token":
            header, prefix = hook.token_header, hook.prefix
            return lambda h, b, now: verify_token(secrets, h, header=header, prefix=prefix)
        case "gitlab":
            return lambda h, b, now: verify_gitlab(secrets, h)
        case "bearer":
            return lambda h, b, now: verify_bearer(secrets, h)
        case "basic":
            return lambda h, b, now: verify_basic(secrets, h)
    raise ValueError(f"verify: {hook.verify} is not a shared-secret scheme")

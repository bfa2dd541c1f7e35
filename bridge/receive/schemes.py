"""The signature schemes of inbound webhooks, as pure functions.

Each `verify_*` function takes the secrets of a source (all are tried, for rotation), the
request's headers (names lower-cased), its raw body bytes and, for the timestamped schemes,
the current Unix time and the tolerance in seconds. It returns None when one secret proves
the request, and raises `VerificationError` with a reason for the log otherwise. Reasons
never contain a secret or an expected signature.

Signatures are always computed over the raw body bytes and compared with
`hmac.compare_digest`. A header may list several signatures (key rotation); more than
`MAX_SIGNATURES` is refused with `MalformedSignature` before any is checked, and checking
stops at the first valid one: an unauthenticated sender cannot buy seconds of CPU with a
long list (an Ed25519 check costs about 200 µs, plus hashing the body).

`build_verifier(webhook_config)` binds a source's config once, so the hot path only hashes
and compares; `is_costly` says which checks belong off the event loop. The schemes that send
a shared secret as it is (tokens, Bearer, Basic, GitLab) are in `credentials.py`; the
signing side of every scheme, for `bridge send`, is in `signers.py`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bridge import macs
from bridge.config import WebhookConfig
from bridge.errors import MalformedSignature, VerificationError
from bridge.receive import credentials

Headers = Mapping[str, str]
# (headers, body, now_s) -> None, or raises VerificationError.
Verifier = Callable[[Headers, bytes, float], None]

_WHSEC_PREFIX = "whsec_"
_WHPK_PREFIX = "whpk_"
_ED25519_SIGNATURE_BYTES = 64
# Unix timestamps are at most this many digits (year 33658); more is not a timestamp.
_MAX_TIMESTAMP_DIGITS = 12
# Signatures one header may list. Senders list one per key in rotation (two or three); the
# cap bounds the work an unsigned request can cause: 16 Ed25519 checks are about 3 ms.
MAX_SIGNATURES = 16
# The base64 of a 64-byte Ed25519 signature, with and without its padding.
_ED25519_BASE64_CHARS = (86, 88)


# -- helpers -------------------------------------------------------------------------------


_same = credentials.same
_require = credentials.require


def _timestamp(value: str, name: str, now_s: float, tolerance_s: float) -> int:
    """The Unix seconds in `value`, checked against now within the tolerance, both ways."""
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_TIMESTAMP_DIGITS):
        raise VerificationError(f"the {name} is not a Unix timestamp")
    timestamp = int(text)
    if timestamp < now_s - tolerance_s:
        raise VerificationError(
            f"the {name} is {now_s - timestamp:.0f} s old (tolerance {tolerance_s:.0f} s)"
        )
    if timestamp > now_s + tolerance_s:
        raise VerificationError(
            f"the {name} is {timestamp - now_s:.0f} s in the future (tolerance {tolerance_s:.0f} s)"
        )
    return timestamp


def _entries(value: str, name: str, sep: str | None = None, *, extra: int = 0) -> list[str]:
    """The entries of a signature header split at `sep` (whitespace when None), or
    MalformedSignature when it has more than MAX_SIGNATURES (plus `extra` that are no
    signature), found without splitting the rest."""
    entries = value.split(sep, MAX_SIGNATURES + extra)
    if len(entries) > MAX_SIGNATURES + extra:
        raise MalformedSignature(f"the {name} header has more than {MAX_SIGNATURES} entries")
    return entries


def _hmac_sha256(key: bytes, *parts: bytes) -> bytes:
    return macs.hmac_sha256(key, *parts)


def _utf8(secret: str) -> bytes:
    return secret.encode("utf-8")


# -- Standard Webhooks (and Svix) ----------------------------------------------------------


def _b64decode(text: str) -> bytes:
    """Strict base64, with the padding some providers drop restored; ValueError otherwise."""
    text = text.rstrip("=")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ValueError("the secret's key is not base64") from None


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: the base64 after `whsec_`, decoded.

    Raises ValueError when the secret holds no base64 key.
    """
    key = _b64decode(secret.removeprefix(_WHSEC_PREFIX))
    if not key:
        raise ValueError("the secret's key is empty")
    return key


def standard_webhooks_public_key(secret: str) -> Ed25519PublicKey:
    """The Ed25519 public key of a `whpk_` key; ValueError when it is not 32 bytes of base64."""
    raw = _b64decode(secret.removeprefix(_WHPK_PREFIX))
    if len(raw) != 32:
        raise ValueError("the public key is not 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True, slots=True)
class StandardKeys:
    """What a Standard Webhooks source verifies with: HMAC keys (`v1`), public keys (`v1a`)."""

    hmac: Sequence[bytes] = ()
    public: Sequence[Ed25519PublicKey] = field(default=())

    @classmethod
    def parse(cls, secrets: Sequence[str]) -> StandardKeys:
        """Sort a source's secrets: `whpk_` ones are public keys, the others `whsec_` secrets."""
        return cls(
            hmac=[standard_webhooks_key(s) for s in secrets if not s.startswith(_WHPK_PREFIX)],
            public=[standard_webhooks_public_key(s) for s in secrets if s.startswith(_WHPK_PREFIX)],
        )


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    """What a Standard Webhooks signature covers: `{id}.{timestamp}.{body}`."""
    return f"{msg_id}.{timestamp}.".encode() + body


def sign_standard_webhooks(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of a Standard Webhooks message."""
    digest = _hmac_sha256(key, f"{msg_id}.{timestamp}.".encode(), body)
    return "v1," + base64.b64encode(digest).decode("ascii")


def _ed25519_valid(keys: Sequence[Ed25519PublicKey], entry: str, content: bytes) -> bool:
    """True when the base64 signature of a `v1a,` entry is valid under one of `keys`."""
    text = entry[len("v1a,") :]
    if len(text) not in _ED25519_BASE64_CHARS:
        return False
    try:
        signature = _b64decode(text)
    except ValueError:
        return False
    if len(signature) != _ED25519_SIGNATURE_BYTES:
        return False
    for key in keys:
        try:
            key.verify(signature, content)
        except InvalidSignature:
            continue
        return True
    return False


def verify_standard_webhooks(
    keys: Sequence[bytes] | StandardKeys,
    headers: Headers,
    body: bytes,
    now_s: float,
    tolerance_s: float,
) -> None:
    """Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.

    The `svix-` prefixed headers (Svix, Clerk, Resend) are accepted when the `webhook-`
    ones are absent. The signature header holds space-separated `v1,<base64>` (HMAC) and
    `v1a,<base64>` (Ed25519) entries, at most MAX_SIGNATURES of them; the first valid entry
    proves the request.
    """
    found = keys if isinstance(keys, StandardKeys) else StandardKeys(hmac=keys)
    prefix = "svix-" if "svix-id" in headers and "webhook-id" not in headers else "webhook-"
    msg_id = _require(headers, prefix + "id")
    stamp = _require(headers, prefix + "timestamp")
    given = _entries(_require(headers, prefix + "signature"), prefix + "signature")
    timestamp = _timestamp(stamp, prefix + "timestamp", now_s, tolerance_s)
    symmetric = [sig for sig in given if sig.startswith("v1,")] if found.hmac else []
    asymmetric = [sig for sig in given if sig.startswith("v1a,")] if found.public else []
    if not symmetric and not asymmetric:
        wanted = " or ".join(n for n, k in (("v1", found.hmac), ("v1a", found.public)) if k)
        raise VerificationError(f"the {prefix}signature header has no {wanted} signature")
    for key in found.hmac if symmetric else ():
        expected = sign_standard_webhooks(key, msg_id, timestamp, body)
        if any(_same(sig, expected) for sig in symmetric):
            return
    if asymmetric:
        content = signed_content(msg_id, timestamp, body)
        # A repeated entry would be checked again for nothing.
        if any(_ed25519_valid(found.public, sig, content) for sig in dict.fromkeys(asymmetric)):
            return
    raise VerificationError(f"no {prefix}signature matches any secret")


# -- Stripe --------------------------------------------------------------------------------


def sign_stripe(secret: str, timestamp: int, body: bytes) -> str:
    """The hex `v1` signature of a Stripe event (the secret is used as text)."""
    return _hmac_sha256(_utf8(secret), f"{timestamp}.".encode(), body).hex()


def verify_stripe(
    secrets: Sequence[str], headers: Headers, body: bytes, now_s: float, tolerance_s: float
) -> None:
    """Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]` over `{t}.{body}`.

    At most MAX_SIGNATURES signatures (and `t=`); the first matching `v1` proves the request.
    """
    header = _require(headers, "stripe-signature")
    stamp: str | None = None
    given: list[str] = []
    # The `t=` item comes on top of the signatures.
    for item in _entries(header, "stripe-signature", ",", extra=1):
        name, _, value = item.strip().partition("=")
        if name == "t":
            stamp = value
        elif name == "v1":
            given.append(value.lower())
    if stamp is None:
        raise VerificationError("the stripe-signature header has no t=")
    if not given:
        raise VerificationError("the stripe-signature header has no v1 signature")
    timestamp = _timestamp(stamp, "stripe-signature timestamp", now_s, tolerance_s)
    for secret in secrets:
        expected = sign_stripe(secret, timestamp, body)
        if any(_same(sig, expected) for sig in given):
            return
    raise VerificationError("no stripe-signature v1 matches any secret")


# -- GitHub --------------------------------------------------------------------------------


def sign_github(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value of a GitHub delivery."""
    return "sha256=" + _hmac_sha256(_utf8(secret), body).hex()


def verify_github(secrets: Sequence[str], headers: Headers, body: bytes) -> None:
    """GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`; no timestamp."""
    given = _require(headers, "x-hub-signature-256").strip()
    if not given.startswith("sha256="):
        raise VerificationError("the x-hub-signature-256 header does not start with sha256=")
    given = "sha256=" + given[len("sha256=") :].lower()
    if any([_same(given, sign_github(secret, body)) for secret in secrets]):
        return
    raise VerificationError("the x-hub-signature-256 matches no secret")


# -- Slack ---------------------------------------------------------------------------------


def sign_slack(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Slack-Signature` value of a Slack request."""
    return "v0=" + _hmac_sha256(_utf8(secret), f"v0:{timestamp}:".encode(), body).hex()


def verify_slack(
    secrets: Sequence[str], headers: Headers, body: bytes, now_s: float, tolerance_s: float
) -> None:
    """Slack: `X-Slack-Signature: v0=<hex>` over `v0:{ts}:{body}`, `X-Slack-Request-Timestamp`."""
    stamp = _require(headers, "x-slack-request-timestamp")
    given = _require(headers, "x-slack-signature").strip()
    if not given.startswith("v0="):
        raise VerificationError("the x-slack-signature header does not start with v0=")
    given = "v0=" + given[3:].lower()
    timestamp = _timestamp(stamp, "x-slack-request-timestamp", now_s, tolerance_s)
    if any([_same(given, sign_slack(secret, timestamp, body)) for secret in secrets]):
        return
    raise VerificationError("the x-slack-signature matches no secret")


# -- Shopify -------------------------------------------------------------------------------


def sign_shopify(secret: str, body: bytes) -> str:
    """The `X-Shopify-Hmac-Sha256` value of a Shopify webhook."""
    return base64.b64encode(_hmac_sha256(_utf8(secret), body)).decode("ascii")


def verify_shopify(secrets: Sequence[str], headers: Headers, body: bytes) -> None:
    """Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(secret, body)>`; no timestamp."""
    given = _require(headers, "x-shopify-hmac-sha256").strip()
    if any([_same(given, sign_shopify(secret, body)) for secret in secrets]):
        return
    raise VerificationError("the x-shopify-hmac-sha256 matches no secret")


# -- generic HMAC --------------------------------------------------------------------------


def sign_hmac(
    secret: str, body: bytes, *, algorithm: str = "sha256", encoding: str = "hex", prefix: str = ""
) -> str:
    """A generic HMAC signature of the body: `prefix` + hex or base64 digest."""
    digest = hmac.new(_utf8(secret), body, getattr(hashlib, algorithm)).digest()
    text = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode("ascii")
    return prefix + text


def verify_hmac(
    secrets: Sequence[str],
    headers: Headers,
    body: bytes,
    *,
    header: str,
    algorithm: str = "sha256",
    encoding: str = "hex",
    prefix: str = "",
) -> None:
    """A generic HMAC of the raw body in one header, e.g. `X-Signature: sha256=<hex>`."""
    name = header.lower()
    given = _require(headers, name).strip()
    if not given.startswith(prefix):
        raise VerificationError(f"the {name} header does not start with the expected prefix")
    if encoding == "hex":
        # Hex digits are compared case-insensitively; base64 is case-sensitive.
        given = prefix + given[len(prefix) :].lower()
    expected = [
        sign_hmac(s, body, algorithm=algorithm, encoding=encoding, prefix=prefix) for s in secrets
    ]
    if any([_same(given, e) for e in expected]):
        return
    raise VerificationError(f"the {name} header matches no secret")


# -- binding a source's config -------------------------------------------------------------


# Up to this body size a check costs microseconds (HMAC) and runs on the event loop; above
# it hashing the body takes milliseconds per key (about 3 ms a MiB), so it runs in a thread.
INLINE_BODY_BYTES = 64 * 1024


def is_costly(hook: WebhookConfig, body_bytes: int) -> bool:
    """True when checking a request of `body_bytes` may take more than a millisecond, so it
    belongs off the event loop: a large body, or Ed25519 (`whpk_`) keys, whose checks cost
    about 200 µs an entry."""
    return body_bytes > INLINE_BODY_BYTES or has_costly_keys(hook)


def has_costly_keys(hook: WebhookConfig) -> bool:
    """True when a source's checks cost about 200 µs a key whatever the body (Ed25519)."""
    return hook.verify == "standard-webhooks" and any(
        s.get_secret_value().startswith(_WHPK_PREFIX) for s in hook.secrets
    )


def _accept_unsigned(headers: Headers, body: bytes, now_s: float) -> None:
    return None


def build_verifier(hook: WebhookConfig) -> Verifier:
    """The verifier of one webhook source, with its secrets and options bound once.

    Raises ValueError when a Standard Webhooks secret holds no base64 key.
    """
    secrets: list[str] = [s.get_secret_value() for s in hook.secrets]
    tolerance_s = hook.tolerance_s
    match hook.verify:
        case "standard-webhooks":
            keys = StandardKeys.parse(secrets)
            return lambda h, b, now: verify_standard_webhooks(keys, h, b, now, tolerance_s)
        case "stripe":
            return lambda h, b, now: verify_stripe(secrets, h, b, now, tolerance_s)
        case "github":
            return lambda h, b, now: verify_github(secrets, h, b)
        case "slack":
            return lambda h, b, now: verify_slack(secrets, h, b, now, tolerance_s)
        case "shopify":
            return lambda h, b, now: verify_shopify(secrets, h, b)
        case "hmac":
            assert hook.header is not None  # the config requires it
            header, algorithm, encoding, prefix = (
                hook.header,
                hook.algorithm,
                hook.encoding,
                hook.prefix,
            )
            return lambda h, b, now: verify_hmac(
                secrets, h, b, header=header, algorithm=algorithm, encoding=encoding, prefix=prefix
            )
        case "none":
            return _accept_unsigned
        case _:
            return credentials.build_verifier(hook, secrets)

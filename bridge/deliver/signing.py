"""Standard Webhooks signing (spec v1.0.0), as a pure function of (keys, id, time, body).

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`. A `whsec_` secret signs
with HMAC-SHA256 keyed with the bytes it encodes, sent as `v1,<base64>`; a `whsk_` key is an
Ed25519 seed and signs asymmetrically, sent as `v1a,<base64>`, so a receiver holds only the
public `whpk_` key. During a rotation or a migration every key signs and the signatures are
joined by one space: a receiver that knows any one of them accepts the request.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PREFIX = "whsec_"
ED25519_PREFIX = "whsk_"
PUBLIC_PREFIX = "whpk_"
SECRET_BYTES = 32  # what `bridge secret new` makes (the spec allows 24 to 64)

SigningKey = bytes | Ed25519PrivateKey


def decode_secret(secret: str) -> bytes:
    """The HMAC key a `whsec_` secret stands for (the base64-decoded part after the prefix)."""
    if not secret.startswith(PREFIX):
        raise ValueError("is not a whsec_ secret")
    return base64.b64decode(secret[len(PREFIX) :], validate=True)


def decode_key(secret: str) -> SigningKey:
    """The signing key of a target secret: HMAC bytes for `whsec_`, Ed25519 for `whsk_`."""
    if secret.startswith(ED25519_PREFIX):
        raw = base64.b64decode(secret[len(ED25519_PREFIX) :], validate=True)
        # Some libraries write the 64-byte form (seed, then public key): the seed is first.
        return Ed25519PrivateKey.from_private_bytes(raw[:32])
    return decode_secret(secret)


@functools.lru_cache(maxsize=256)
def _keyed(key: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 with `key` taken in, to copy for each message: the key's two blocks
    are hashed once, not once a delivery (which costs as much as the message's own)."""
    return hmac.new(key, digestmod=hashlib.sha256)


def signature(key: SigningKey, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """One `v1,<base64>` (HMAC) or `v1a,<base64>` (Ed25519) signature of a message."""
    content = b"%s.%d.%s" % (msg_id.encode(), timestamp_s, body)
    if isinstance(key, Ed25519PrivateKey):
        return "v1a," + base64.b64encode(key.sign(content)).decode("ascii")
    mac = _keyed(key).copy()
    mac.update(content)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def sign(keys: Iterable[SigningKey], msg_id: str, timestamp_s: int, body: bytes) -> str:
    """The `webhook-signature` header value: one signature per key, space-separated."""
    return " ".join(signature(key, msg_id, timestamp_s, body) for key in keys)


def signed_headers(
    keys: Iterable[SigningKey], msg_id: str, timestamp_s: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers of a message."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": sign(keys, msg_id, timestamp_s, body),
    }


def new_secret() -> str:
    """A new random `whsec_` secret."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def public_key(secret: str) -> str:
    """The `whpk_` public key of a `whsk_` key: what the receiver verifies with."""
    key = decode_key(secret)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("is not a whsk_ key")
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_PREFIX + base64.b64encode(raw).decode("ascii")


def new_keypair() -> tuple[str, str]:
    """A new `whsk_` Ed25519 key (the seed) and its `whpk_` public key."""
    secret = ED25519_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    return secret, public_key(secret)

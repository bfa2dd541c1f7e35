"""Standard Webhooks signing (spec v1.0.0), as a pure function of (secrets, id, time, body).

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; each signature is the
base64 of HMAC-SHA256 keyed with the bytes a `whsec_` secret encodes, sent as `v1,<sig>`.
During a secret rotation every secret signs and the signatures are joined by one space, so
a receiver that knows any one of them accepts the request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

PREFIX = "whsec_"


def decode_secret(secret: str) -> bytes:
    """The HMAC key a `whsec_` secret stands for (the base64-decoded part after the prefix)."""
    if not secret.startswith(PREFIX):
        raise ValueError("is not a whsec_ secret")
    return base64.b64decode(secret[len(PREFIX) :], validate=True)


def signature(key: bytes, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """One `v1,<base64>` signature of a message."""
    content = b"%s.%d.%s" % (msg_id.encode(), timestamp_s, body)
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign(keys: Iterable[bytes], msg_id: str, timestamp_s: int, body: bytes) -> str:
    """The `webhook-signature` header value: one `v1,<sig>` per key, space-separated."""
    return " ".join(signature(key, msg_id, timestamp_s, body) for key in keys)


def signed_headers(
    keys: Iterable[bytes], msg_id: str, timestamp_s: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers of a message."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": sign(keys, msg_id, timestamp_s, body),
    }

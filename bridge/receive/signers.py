"""The sending side of every scheme: the headers a provider puts on a webhook, as pure functions.

`sign_request(hook, body, ...)` gives the headers that the provider behind a source's
`verify` scheme would send with `body`: its signature (or token or credentials), its
timestamp, its delivery id and event type headers. `example_body` is a small body of the
shape the scheme's preset reads. `bridge send` uses both (`sender.py`); the tests check
them against the verifiers of `schemes.py` and `credentials.py` and against independent
libraries. The first usable secret of the source signs; everything random (ids) and the
time come in as arguments.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.config import WebhookConfig
from bridge.errors import SendError
from bridge.receive import schemes

# Schemes whose provider names the event type in a header (the others: in the body).
HEADER_TYPED = frozenset({"github", "shopify"})
# The types of the example bodies, by scheme, when none is asked for.
DEFAULT_TYPES = {"github": "ping", "shopify": "bridge/test", "slack": "message", "gitlab": "push"}
DEFAULT_TYPE = "bridge.test"

_WHSK_PREFIX = "whsk_"


@dataclass(frozen=True, slots=True)
class Draft:
    """What one request needs besides the body: the source, the time and a fresh id."""

    name: str
    hook: WebhookConfig
    now_s: int
    delivery_id: str
    event_type: str | None = None
    # A `whsk_` signing key, for Standard Webhooks sources that verify `v1a` only.
    signing_key: str | None = None

    @property
    def secrets(self) -> list[str]:
        """The source's secrets, as text."""
        return [s.get_secret_value() for s in self.hook.secrets]


# -- Standard Webhooks v1a -------------------------------------------------------------------


def signing_key_seed(secret: str) -> bytes:
    """The 32-byte Ed25519 seed of a `whsk_` signing key; ValueError otherwise."""
    text = secret.removeprefix(_WHSK_PREFIX)
    try:
        seed = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        raise ValueError("the signing key is not base64") from None
    if len(seed) != 32:
        raise ValueError("the signing key is not a 32-byte Ed25519 seed")
    return seed


def sign_standard_webhooks_v1a(seed: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `v1a,<base64>` Ed25519 signature of a Standard Webhooks message."""
    key = Ed25519PrivateKey.from_private_bytes(seed)
    signature = key.sign(schemes.signed_content(msg_id, timestamp, body))
    return "v1a," + base64.b64encode(signature).decode("ascii")


def _standard_webhooks(draft: Draft, body: bytes) -> dict[str, str]:
    msg_id = "msg_" + draft.delivery_id.replace("-", "")
    entries = [
        schemes.sign_standard_webhooks(schemes.standard_webhooks_key(s), msg_id, draft.now_s, body)
        for s in draft.secrets[:1]
        if not s.startswith("whpk_")
    ]
    if draft.signing_key:
        seed = signing_key_seed(draft.signing_key)
        entries.append(sign_standard_webhooks_v1a(seed, msg_id, draft.now_s, body))
    if not entries:
        raise SendError(
            f"source {draft.name} verifies v1a signatures only: give its whsk_ signing key"
            " (--signing-key or $BRIDGE_SIGNING_KEY)"
        )
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(draft.now_s),
        "webhook-signature": " ".join(entries),
    }


# -- the HMAC providers ----------------------------------------------------------------------


def _stripe(draft: Draft, body: bytes) -> dict[str, str]:
    signature = schemes.sign_stripe(draft.secrets[0], draft.now_s, body)
    return {"stripe-signature": f"t={draft.now_s},v1={signature}"}


def _github(draft: Draft, body: bytes) -> dict[str, str]:
    secret = draft.secrets[0]
    # GitHub still sends the SHA-1 signature too, for old receivers.
    return {
        "x-github-event": draft.event_type or DEFAULT_TYPES["github"],
        "x-github-delivery": draft.delivery_id,
        "x-hub-signature": schemes.sign_hmac(secret, body, algorithm="sha1", prefix="sha1="),
        "x-hub-signature-256": schemes.sign_github(secret, body),
        "user-agent": "GitHub-Hookshot/bridge-send",
    }


def _slack(draft: Draft, body: bytes) -> dict[str, str]:
    return {
        "x-slack-request-timestamp": str(draft.now_s),
        "x-slack-signature": schemes.sign_slack(draft.secrets[0], draft.now_s, body),
    }


def _shopify(draft: Draft, body: bytes) -> dict[str, str]:
    triggered = datetime.fromtimestamp(draft.now_s, UTC).isoformat().replace("+00:00", "Z")
    return {
        "x-shopify-hmac-sha256": schemes.sign_shopify(draft.secrets[0], body),
        "x-shopify-topic": draft.event_type or DEFAULT_TYPES["shopify"],
        "x-shopify-webhook-id": draft.delivery_id,
        "x-shopify-triggered-at": triggered,
    }


def _hmac(draft: Draft, body: bytes) -> dict[str, str]:
    hook = draft.hook
    assert hook.header is not None  # the config requires it
    signature = schemes.sign_hmac(
        draft.secrets[0], body, algorithm=hook.algorithm, encoding=hook.encoding, prefix=hook.prefix
    )
    return {hook.header.lower(): signature}


# -- the shared-secret senders ---------------------------------------------------------------


def gitlab_event_header(object_kind: str) -> str:
    """GitLab's `X-Gitlab-Event` for an `object_kind`: `merge_request` -> `Merge Request Hook`."""
    return object_kind.replace("_", " ").title() + " Hook"


def _gitlab(draft: Draft, body: bytes) -> dict[str, str]:
    kind = _body_field(body, "object_kind") or DEFAULT_TYPES["gitlab"]
    return {
        "x-gitlab-token": draft.secrets[0],
        "x-gitlab-event": gitlab_event_header(kind),
        "x-gitlab-event-uuid": draft.delivery_id,
        # One per hook: the same for every request to this source.
        "x-gitlab-webhook-uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, "bridge:" + draft.name)),
    }


def _token(draft: Draft, body: bytes) -> dict[str, str]:
    return {draft.hook.token_header.lower(): draft.hook.prefix + draft.secrets[0]}


def _bearer(draft: Draft, body: bytes) -> dict[str, str]:
    return {"authorization": "Bearer " + draft.secrets[0]}


def basic_authorization(pair: str) -> str:
    """The `Authorization` value of Basic credentials `user:password` (RFC 7617)."""
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


def _basic(draft: Draft, body: bytes) -> dict[str, str]:
    return {"authorization": basic_authorization(draft.secrets[0])}


def _unsigned(draft: Draft, body: bytes) -> dict[str, str]:
    return {}


_SIGNERS: dict[str, Callable[[Draft, bytes], dict[str, str]]] = {
    "standard-webhooks": _standard_webhooks,
    "stripe": _stripe,
    "github": _github,
    "slack": _slack,
    "shopify": _shopify,
    "hmac": _hmac,
    "gitlab": _gitlab,
    "token": _token,
    "bearer": _bearer,
    "basic": _basic,
    "none": _unsigned,
}


def sign_request(
    draft: Draft, body: bytes, content_type: str = "application/json"
) -> dict[str, str]:
    """The headers the provider of `draft.hook.verify` sends with `body` (names lower-cased)."""
    return {"content-type": content_type, **_SIGNERS[draft.hook.verify](draft, body)}


# -- example bodies --------------------------------------------------------------------------


def _body_field(body: bytes, name: str) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _alert(draft: Draft, status: str) -> dict[str, Any]:
    started = datetime.fromtimestamp(draft.now_s, UTC).isoformat().replace("+00:00", "Z")
    labels = {"alertname": "BridgeTest", "source": draft.name}
    return {
        "version": "4",
        "receiver": draft.name,
        "status": status,
        "groupKey": '{}:{alertname="BridgeTest"}',
        "groupLabels": {"alertname": "BridgeTest"},
        "commonLabels": labels,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "startsAt": started,
                "fingerprint": draft.delivery_id.replace("-", "")[:16],
            }
        ],
    }


def example_data(draft: Draft) -> Any:
    """A small event of the shape the scheme's preset reads, of `draft.event_type`."""
    verify, asked, unique = draft.hook.verify, draft.event_type, draft.delivery_id
    match verify:
        case "github":
            return {"zen": "Keep it logically awesome.", "hook_id": 1, "sent_by": "bridge send"}
        case "shopify":
            return {"id": 1, "note": "sent by bridge send"}
        case "stripe":
            kind = asked or DEFAULT_TYPE
            return {"id": f"evt_{unique.replace('-', '')}", "object": "event", "type": kind,
                    "created": draft.now_s, "data": {"object": {"id": "obj_test"}}}  # fmt: skip
        case "slack":
            kind = asked or DEFAULT_TYPES["slack"]
            event = {"type": kind, "text": "bridge send"}
            return {"type": "event_callback", "event_id": f"Ev{unique.replace('-', '')[:12]}",
                    "event_time": draft.now_s, "event": event}  # fmt: skip
        case "gitlab":
            return {"object_kind": asked or DEFAULT_TYPES["gitlab"], "sent_by": "bridge send"}
        case "bearer" | "basic" if asked is None or asked.startswith("alert."):
            return _alert(draft, (asked or "alert.firing").removeprefix("alert."))
    return {"id": unique, "type": asked or DEFAULT_TYPE, "data": {"sent_by": "bridge send"}}


def example_body(draft: Draft) -> bytes:
    """`example_data` as the JSON bytes a provider would send."""
    return json.dumps(example_data(draft)).encode("utf-8")


def check_type_option(draft: Draft, has_file: bool) -> None:
    """SendError when a type is asked for a body from a file whose scheme reads it from there."""
    if draft.event_type and has_file and draft.hook.verify not in HEADER_TYPED:
        raise SendError(
            f"source {draft.name} (verify: {draft.hook.verify}) reads the event type from the"
            " body: set it in the file rather than with --type"
        )

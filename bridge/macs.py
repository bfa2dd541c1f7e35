"""HMAC-SHA256 with each key's padded blocks hashed once (RFC 2104), for every signature the
bridge checks or makes.

`hmac.digest` and `hmac.new` ask OpenSSL 3 for the algorithm on every call: 2.5 to 4 µs here,
several times the hashing of a webhook's body. HMAC's inner and outer hashes start from the
same state for a given key each time, so those two states are made once per key and copied
for each message (0.85 µs). The keys are the configured secrets: few, and kept as long as the
config is; the cache holds at most MAX_KEYS and starts over when full. Tested against the
`hmac` module (tests/test_macs.py). Imports nothing of the bridge.
"""

from __future__ import annotations

import hashlib
from typing import Any

BLOCK_BYTES = 64  # SHA-256's block
MAX_KEYS = 1024
_INNER = bytes(x ^ 0x36 for x in range(256))
_OUTER = bytes(x ^ 0x5C for x in range(256))
_states: dict[bytes, tuple[Any, Any]] = {}


def hmac_sha256(key: bytes, *parts: bytes) -> bytes:
    """The HMAC-SHA256 of the concatenated `parts` under `key`."""
    states = _states.get(key)
    if states is None:
        states = _prepare(key)
    inner = states[0].copy()
    for part in parts:
        inner.update(part)
    outer = states[1].copy()
    outer.update(inner.digest())
    return outer.digest()


def _prepare(key: bytes) -> tuple[Any, Any]:
    """The inner and outer hash states of `key`, kept for its next messages."""
    if len(_states) >= MAX_KEYS:
        _states.clear()
    block = hashlib.sha256(key).digest() if len(key) > BLOCK_BYTES else key
    block = block.ljust(BLOCK_BYTES, b"\0")
    states = (hashlib.sha256(block.translate(_INNER)), hashlib.sha256(block.translate(_OUTER)))
    _states[key] = states
    return states

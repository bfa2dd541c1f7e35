"""`bridge.macs.hmac_sha256` against the standard library's `hmac`, the reference."""

from __future__ import annotations

import hashlib
import hmac
import random
import threading

from bridge import macs


def test_every_key_length_and_message_gives_the_reference_hmac() -> None:
    rng = random.Random(2104)
    # Around SHA-256's 64-byte block: shorter keys are padded, longer ones hashed first.
    for length in [0, 1, 24, 32, 63, 64, 65, 100, 200]:
        for _ in range(20):
            key = rng.randbytes(length)
            parts = [rng.randbytes(rng.randint(0, 300)) for _ in range(rng.randint(1, 3))]
            expected = hmac.new(key, b"".join(parts), hashlib.sha256).digest()
            assert macs.hmac_sha256(key, *parts) == expected
            assert macs.hmac_sha256(key, *parts) == expected  # from the kept states


def test_a_full_cache_starts_over_and_stays_right() -> None:
    keys = [b"key-%d" % i for i in range(macs.MAX_KEYS + 10)]
    for key in keys:
        assert macs.hmac_sha256(key, b"m") == hmac.digest(key, b"m", "sha256")
    assert len(macs._states) <= macs.MAX_KEYS


def test_threads_signing_with_one_key_get_the_reference_hmac() -> None:
    key = b"shared secret"
    wrong: list[bytes] = []

    def sign(n: int) -> None:
        for i in range(2000):
            msg = b"%d-%d" % (n, i)
            if macs.hmac_sha256(key, msg) != hmac.digest(key, msg, "sha256"):
                wrong.append(msg)

    threads = [threading.Thread(target=sign, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert wrong == [] and not any(t.is_alive() for t in threads)

"""A target's `Retry-After` that cannot be read, or asks for too long, against a real target.

The value is read by `bridge/deliver/policy.py`; an unreadable one (`²`, sent as the bytes
C2 B2) is ignored and the retry schedule stands; one beyond `limits.max_wait` waits that long.
Either way the attempt is recorded, and its error says what was done with the header.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deliver.test_delivery import _status, bridge, receiver, target
from tests.helpers import eventually

pytestmark = pytest.mark.anyio

# `²` as UTF-8 (C2 B2), written by the target's server as two latin-1 bytes.
SUPERSCRIPT_TWO = "\u00c2\u00b2"


async def test_a_429_with_an_unreadable_retry_after_is_recorded_and_retried(
    tmp_path: Path,
) -> None:
    with receiver() as r:
        r.plan = [(429, {"retry-after": SUPERSCRIPT_TWO})]
        async with bridge(tmp_path, target("t1", r.url + "/hook", "retry: [50ms]")) as b:
            event = await b.emit()
            row = await eventually(lambda: _status(b, event, "delivered"))
            assert row.attempts == 2 and len(r.hits) == 2
            first, second = await b.store.list_attempts(event.id)
            assert first.status_code == 429
            assert first.error == "answered 429; its Retry-After cannot be read: ignored"
            assert second.status_code == 204


async def test_a_retry_after_beyond_max_wait_waits_max_wait_and_says_so(tmp_path: Path) -> None:
    with receiver() as r:
        r.default = (429, {"retry-after": "9" * 400})
        limits = "limits: {max_wait: 90s}\n"
        async with bridge(tmp_path, target("t1", r.url + "/hook", "retry: [10ms]"), limits) as b:
            event = await b.emit()
            row = await eventually(lambda: _status(b, event, "failed"))
            (attempt,) = await b.store.list_attempts(event.id)
            assert attempt.error == (
                "answered 429; its Retry-After asks for more than limits.max_wait: waiting 90 s"
            )
            assert attempt.at_ms is not None
            assert 90_000 <= row.next_ms - attempt.at_ms <= 91_000
            status = (await b.cli("status", "--json")).output
            assert "its Retry-After asks for more than limits.max_wait: waiting 90 s" in status
            assert len(r.hits) == 1  # nothing more was sent while it waits

"""A delivery's body is byte for byte what the encoder before issue 29 made of the event.

The body is now the stored `data` text spliced into the envelope (`Event.to_json`), and the
times come from a cache; the reference below is the old code, kept here as it was: the
CloudEvent built as a dict, every time formatted by `strftime`, the whole encoded by
`jsontext.dumps`. The events go through a real store (SQLite and PostgreSQL) and a claim,
as a delivery's do.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge import jsontext
from bridge.deliver.request import build_request
from bridge.deliver.signing import decode_key
from bridge.events import Event, event_id, format_time, now_ms
from bridge.store import NewEvent, Store
from bridge.store.deliveries import Claim
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET


def old_format_time(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def old_body(event: Event) -> bytes:
    """The structured body as `build_request` made it before issue 29."""
    out: dict[str, Any] = {
        "specversion": "1.0",
        "id": event.id,
        "source": event.source,
        "type": event.type,
    }
    if event.subject is not None:
        out["subject"] = event.subject
    if event.time_ms is not None:
        out["time"] = old_format_time(event.time_ms)
    out["datacontenttype"] = "application/json"
    out["origin"] = event.origin
    if event.change is not None:
        out["change"] = event.change
    out["recordedtime"] = old_format_time(event.recorded_ms)
    out["data"] = event.data
    return jsontext.dumps(out).encode()


DATA: list[Any] = [
    {"seq": 1, "note": "x" * 200},
    {"name": "Zoë", "city": "Zürich", "cjk": "漢字かな", "rtl": "שלום", "emoji": "🦆🚀"},
    {"sep": "line\u2028para\u2029", "ctl": "\x00\x01\x1f\x7f", "q": 'say "hi" \\ /path\n\t\r'},
    {"floats": [0.1, 1e-7, 1e22, -0.0, 1.7976931348623157e308, 5e-324, 3.14159, 2.5e-5, 1e16]},
    {"ints": [0, -1, 2**53 + 1, 2**70, -(2**64)], "bools": [True, False], "nothing": None},
    {
        "deep": {"a": [1, {"b": [{"c": {"d": [[], {}, [[[]]]]}}]}], "z": {}},
        "order": {"b": 1, "a": 2},
    },
    {"words": "NaN and Infinity are only words here", "Infinity": "-Infinity"},
    "not JSON at all: a plain text body <b>with</b> markup & \u00e9",
    "",
    12345,
    -2.5,
    True,
    None,
    [],
    {},
    [1, "two", [3.0], {"four": None}],
    {"z": 1, "a": 2, "m": 3},
]


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def events() -> list[Event]:
    rng = random.Random(29)
    out = []
    for i, data in enumerate(DATA):
        recorded = now_ms() - rng.randrange(0, 10**9)
        out.append(Event(
            event_id("bytes", str(i)), "bytes", ["thing.happened", 'say "hi" \\ \u2028'][i % 2],
            "poll" if i % 2 else "push", data, recorded,
            subject=[None, "sub/é", "a b", '"quoted"\\/', "\U0001f600\u00e9"][i % 5],
            time_ms=[None, recorded - 1, 0, 999, 1000][i % 5],
            change=[None, "created", "updated", "deleted"][i % 4],  # type: ignore[list-item]
            traceparent=TRACEPARENT if i % 2 else None,
        ))  # fmt: skip
    return out


def claimed(store: Store, evs: list[Event]) -> list[Claim]:
    asyncio.run(store.record_events([NewEvent(e, ["t"]) for e in evs]))
    at = now_ms() + 10
    got = asyncio.run(store.claim_due({"t": 1000}, at, at + 60_000)).claims
    assert len(got) == len(evs)
    return got


def body(claim: Claim) -> bytes:
    keys = [decode_key(TEST_SECRET)]
    request = build_request(
        claim.event, format="structured", keys=keys, extra_headers={}, now_s=1_700_000_000
    )
    return request.body


def test_bodies_of_stored_events_are_byte_identical(any_store: Store) -> None:
    evs = events()
    by_id = {e.id: e for e in evs}
    claims = claimed(any_store, evs)
    for claim in claims:
        original = by_id[claim.event.id]
        assert body(claim) == old_body(original), original.data
        # The same bytes as the old encoder over the event as the store gives it back too.
        assert body(claim) == old_body(claim.event)
    # The stored text was spliced in (not encoded again), but for the text that holds the
    # words NaN or Infinity (encoded again to be safe: older versions stored such numbers).
    encoded = [c.event.data for c in claims if c.event.data_json is None]
    assert encoded == [DATA[6]]


def test_an_event_not_from_the_store_is_encoded_as_before() -> None:
    for event in events():
        assert event.data_json is None
        assert event.to_json().encode() == old_body(event)


def test_stored_nan_is_sent_as_null_as_before(tmp_path: Path) -> None:
    # Versions before strict JSON could store `NaN` and `Infinity`; they were sent as null.
    store = SQLiteStore(tmp_path / "bridge.db")
    store.open()
    try:
        evs = [Event(event_id("nan", str(i)), "nan", "t", "push", {"v": i}, now_ms())
               for i in range(3)]  # fmt: skip
        asyncio.run(store.record_events([NewEvent(e, ["t"]) for e in evs]))
        texts = ['{"v":NaN}', "[Infinity,-Infinity,1]", '{"v":"NaN"}']
        with sqlite3.connect(tmp_path / "bridge.db") as conn:
            for e, text in zip(evs, texts, strict=True):
                conn.execute("UPDATE events SET data = ? WHERE id = ?", (text, e.id))
        at = now_ms() + 10
        claims = asyncio.run(store.claim_due({"t": 10}, at, at + 60_000)).claims
    finally:
        store.close()
    bodies = {c.event.id: body(c) for c in claims}
    assert bodies[evs[0].id].endswith(b',"data":{"v":null}}')
    assert bodies[evs[1].id].endswith(b',"data":[null,null,1]}')
    assert bodies[evs[2].id].endswith(b',"data":{"v":"NaN"}}')
    for c in claims:
        assert bodies[c.event.id] == old_body(c.event)


@pytest.mark.parametrize("seed", [1, 2])
def test_format_time_is_the_old_one(seed: int) -> None:
    rng = random.Random(seed)
    values = [0, 1, 999, 1000, 1001, -1, -999, -1000, -1001, 59_999, 60_000, 86_399_999,
              951_782_400_000, 4_102_444_799_999, 253_402_300_799_999]  # fmt: skip
    values += [rng.randrange(-(10**12), 10**13) for _ in range(5000)]
    base = now_ms()
    values += [base + i for i in range(-2000, 2000, 7)]
    for ms in values:
        assert format_time(ms) == old_format_time(ms), ms


def test_a_replaced_data_is_encoded_not_spliced(tmp_path: Path) -> None:
    from dataclasses import replace

    store = SQLiteStore(tmp_path / "bridge.db")
    store.open()
    try:
        (claim,) = claimed(store, [Event(event_id("r", "1"), "r", "t", "push", {"a": 1}, 5)])
    finally:
        store.close()
    assert claim.event.data_json == '{"a":1}'
    changed = replace(claim.event, data={"b": 2})
    assert changed.data_json is None
    assert changed.to_json().endswith(',"data":{"b":2}}')

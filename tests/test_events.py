"""The normalized event: stable ids, times, the CloudEvents shape."""

from __future__ import annotations

import json
import re
from dataclasses import FrozenInstanceError, fields

import pytest

from bridge.events import (
    Event,
    attribute_text,
    event_id,
    format_time,
    parse_time,
    render_type,
    restored,
)
from bridge.store.rows import EVENT_COLUMNS, row_to_event


def test_event_ids_are_stable_and_scoped_by_source() -> None:
    assert event_id("gh", "abc") == event_id("gh", "abc")
    assert event_id("gh", "abc") != event_id("stripe", "abc")
    assert event_id("orders", "42", "updated", "v2") != event_id("orders", "42", "updated", "v3")
    # Parts are separated, so ("a", "bc") and ("ab", "c") differ.
    assert event_id("s", "a", "bc") != event_id("s", "ab", "c")
    assert re.fullmatch(r"evt_[a-z2-7]{24}", event_id("gh", "abc"))


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("2026-11-29T08:30:00Z", 1795941000000),
        ("2026-11-29T08:30:00.123+00:00", 1795941000123),
        ("2026-11-29T09:30:00+01:00", 1795941000000),
        (1795941000, 1795941000000),
        (1795941000.5, 1795941000500),
        (1795941000123, 1795941000123),
        ("1795941000", 1795941000000),
        (None, None),
        ("yesterday", None),
        (True, None),
        (float("nan"), None),
    ],
)
def test_parse_time(value: object, ms: int | None) -> None:
    assert parse_time(value) == ms


def test_format_time_is_rfc3339_with_milliseconds() -> None:
    assert format_time(1795941000123) == "2026-11-29T08:30:00.123Z"
    assert parse_time(format_time(1795941000007)) == 1795941000007


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain.text", "plain.text"),
        ("a\x00b", "a\ufffdb"),
        ("tab\tline\nend\r", "tab\ufffdline\ufffdend\ufffd"),
        ("\x7f\x85\x9f", "\ufffd\ufffd\ufffd"),
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),
        ("\ufdd0 \ufffe \U0001fffe \U0010ffff", "\ufffd \ufffd \ufffd \ufffd"),
        # Not control characters: kept, though str.isprintable says no to them.
        ("caf\u00e9 \u00a0 \u2028 \U0001f600", "caf\u00e9 \u00a0 \u2028 \U0001f600"),
    ],
)
def test_attribute_text_replaces_what_a_cloudevents_string_may_not_hold(
    value: str, text: str
) -> None:
    assert attribute_text(value) == text


def test_render_type() -> None:
    assert render_type("{source}.{change}", "orders", "created") == "orders.created"
    assert render_type("shop.order.{change}", "orders", "deleted") == "shop.order.deleted"


def test_cloudevent_shape_and_round_trip() -> None:
    ev = Event(
        id="evt_x",
        source="orders",
        type="orders.updated",
        origin="poll",
        data={"object": {"id": 1}},
        recorded_ms=1795941000123,
        subject="1",
        time_ms=1795941000000,
        change="updated",
    )
    ce = ev.to_cloudevent()
    assert ce == {
        "specversion": "1.0",
        "id": "evt_x",
        "source": "orders",
        "type": "orders.updated",
        "subject": "1",
        "time": "2026-11-29T08:30:00.000Z",
        "datacontenttype": "application/json",
        "origin": "poll",
        "change": "updated",
        "recordedtime": "2026-11-29T08:30:00.123Z",
        "data": {"object": {"id": 1}},
    }
    # Extension names are lower-case letters and digits only (CloudEvents 1.0).
    for name in ce:
        if name not in ("specversion", "datacontenttype"):
            assert re.fullmatch(r"[a-z0-9]+", name)
    assert Event.from_cloudevent(ce) == ev


def test_push_event_leaves_out_unknown_optional_attributes() -> None:
    ev = Event(id="evt_y", source="gh", type="push", origin="push", data={}, recorded_ms=0)
    ce = ev.to_cloudevent()
    assert "subject" not in ce and "time" not in ce and "change" not in ce


def test_long_attribute_names_the_first_attribute_over_the_limit_in_bytes() -> None:
    from bridge.events import MAX_ATTRIBUTE_BYTES, long_attribute

    assert MAX_ATTRIBUTE_BYTES == 1024
    assert long_attribute(id="a" * 1024, type="t", subject=None) is None
    assert long_attribute(id="a", type="t" * 1025, subject="s" * 5000) == "type"
    # Bytes, not characters: 342 three-byte characters are 1026 bytes.
    assert long_attribute(subject="€" * 341) is None
    assert long_attribute(subject="€" * 342) == "subject"
    assert long_attribute(id="\ud800" * 400) == "id"  # a lone surrogate counts as 3 bytes
    # Counted as stored: each control character becomes U+FFFD, 3 bytes.
    assert long_attribute(type="\x00" * 341) is None
    assert long_attribute(type="\x00" * 342) == "type"


def test_event_ids_are_the_lower_case_base32_of_the_identitys_blake2b() -> None:
    # The ids are stable across versions: the text is base64.b32encode's, written faster.
    import base64
    import hashlib
    import random

    rng = random.Random(29)
    for _ in range(2000):
        source = "".join(rng.choice("abc-_\u00e9\U0001f600") for _ in range(rng.randint(1, 12)))
        identity = str(rng.getrandbits(rng.randint(1, 200)))
        digest = hashlib.blake2b(f"{source}\x1f{identity}".encode(), digest_size=15).digest()
        expected = "evt_" + base64.b32encode(digest).decode().lower()
        assert event_id(source, identity) == expected


def test_an_event_restored_from_its_values_is_the_one_init_makes_and_as_frozen() -> None:
    made = Event(
        id="evt_1", source="s", type="t", origin="poll", data={"a": [1]}, recorded_ms=5,
        subject="sub", time_ms=4, change="updated", upstream_id="u", traceparent="tp",
        tracestate="ts",
    )  # fmt: skip
    again = restored([getattr(made, f.name) for f in fields(Event)])
    assert again == made and repr(again) == repr(made)
    assert [getattr(again, f.name) for f in fields(Event)] == [
        getattr(made, f.name) for f in fields(Event)
    ]
    with pytest.raises(FrozenInstanceError):
        again.id = "evt_2"  # type: ignore[misc]


@pytest.mark.parametrize("text", ['{"a":[1,"\\u00e9"]}', '{"v":NaN}', None])
def test_a_row_gives_every_field_of_its_event(text: str | None) -> None:
    values = {
        "id": "evt_1", "source": "s", "type": "t", "origin": "push", "change": "created",
        "subject": "sub", "upstream_id": "u", "time_ms": 4, "recorded_ms": 5, "data": text,
        "traceparent": "tp", "tracestate": "ts",
    }  # fmt: skip
    event = row_to_event([values[c] for c in EVENT_COLUMNS.split(", ")])
    for name in ("id", "source", "type", "origin", "change", "subject", "upstream_id",
                 "time_ms", "recorded_ms", "traceparent", "tracestate"):  # fmt: skip
        assert getattr(event, name) == values[name], name
    if text is None:
        assert event.data is None and event.data_json is None
    elif "NaN" in text:
        assert event.data == {"v": None} and event.data_json is None  # encoded again, as null
    else:
        assert event.data == json.loads(text) and event.data_json == text


def test_a_stored_events_data_is_parsed_only_when_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A claimed event's body splices the stored text: its `data` is parsed only for what
    needs it (a transform, binary mode, a broker's template), once, and the event stays equal
    to the one that was stored, both ways, with the same hash and repr."""
    import dataclasses

    from bridge import jsontext

    made = Event(id="evt_1", source="s", type="t", origin="push", data={"a": [1, "é"]},
                 recorded_ms=5, subject="sub", time_ms=4, change="updated")  # fmt: skip
    text = jsontext.dumps(made.data)
    parsed: list[str] = []
    real = jsontext.loads_stored
    monkeypatch.setattr(jsontext, "loads_stored", lambda t: parsed.append(t) or real(t))
    row = {"id": "evt_1", "source": "s", "type": "t", "origin": "push", "change": "updated",
           "subject": "sub", "upstream_id": None, "time_ms": 4, "recorded_ms": 5, "data": text,
           "traceparent": None, "tracestate": None}  # fmt: skip
    event = row_to_event([row[c] for c in EVENT_COLUMNS.split(", ")])
    assert event.to_json() == made.to_json()
    assert parsed == []
    assert event.data == made.data and event.data == made.data
    assert parsed == [text]  # once
    assert event == made and made == event
    assert repr(event) == repr(made)
    other = row_to_event([row[c] for c in EVENT_COLUMNS.split(", ")])
    assert other == event  # both unparsed until compared
    assert other != dataclasses.replace(made, data={"a": [2]})
    changed = dataclasses.replace(event, data={"b": 2})
    assert changed.data == {"b": 2} and changed.data_json is None
    assert json.loads(changed.to_json())["data"] == {"b": 2}
    assert dataclasses.asdict(event)["data"] == made.data
    with pytest.raises(FrozenInstanceError):
        event.data = {}  # type: ignore[misc]
    row["data"] = '"text"'  # hashable data: the same hash as the event made with it
    assert hash(row_to_event([row[c] for c in EVENT_COLUMNS.split(", ")])) == hash(
        dataclasses.replace(made, data="text")
    )

"""Strict JSON: numbers that are not finite are refused when read and never written."""

from __future__ import annotations

import json

import pytest

from bridge import jsontext
from bridge.events import Event


@pytest.mark.parametrize(
    "text", ["1e400", "-1e400", "[1E999]", '{"a": NaN}', "Infinity", "[-Infinity]"]
)
def test_non_finite_numbers_are_refused(text: str) -> None:
    with pytest.raises(jsontext.NotFinite):
        jsontext.loads(text)
    with pytest.raises(ValueError):
        jsontext.loads(text.encode())


def test_finite_numbers_of_every_size_are_kept() -> None:
    big = "1" + "0" * 400
    assert jsontext.loads(f"[1e308, -2.5e-320, 0.1, {big}]") == [1e308, -2.5e-320, 0.1, 10**400]


def test_what_is_written_is_strict() -> None:
    for value in (float("inf"), float("-inf"), float("nan"), {"a": [float("inf")]}):
        with pytest.raises(ValueError):
            jsontext.dumps(value)
    assert jsontext.dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'
    assert jsontext.dumps({"a": 1}, indent=2) == '{\n  "a": 1\n}'


def test_an_event_with_a_non_finite_number_cannot_be_encoded() -> None:
    event = Event(id="e", source="s", type="t", origin="push", data={"x": float("inf")},
                  recorded_ms=0)  # fmt: skip
    with pytest.raises(ValueError):
        event.to_json()


def test_rows_stored_by_older_versions_read_back_as_null() -> None:
    stored = json.dumps({"a": float("inf"), "b": float("nan"), "c": 1.5})
    assert jsontext.loads_stored(stored) == {"a": None, "b": None, "c": 1.5}

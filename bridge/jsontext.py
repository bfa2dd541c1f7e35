"""Strict JSON in and out: every number finite, as RFC 8259 requires.

Python's `json` reads `NaN`, `Infinity` and numbers too large for a float (`1e400` becomes
`inf`), and writes them back as `NaN` and `Infinity`, which no strict parser accepts (a
receiver's `JSON.parse` included). The bridge reads what arrives with `loads`, which refuses
them, and writes everything with `dumps`, which cannot produce them. `loads_stored` reads
what the bridge stored itself, where earlier versions may have left `Infinity`: such
numbers read back as null, so an old row can still be shown and delivered as strict JSON.

This module imports nothing of the bridge, so every layer may use it.
"""

from __future__ import annotations

import json
import math
from typing import Any


class NotFinite(ValueError):
    """A JSON text holds `NaN`, `Infinity` or a number too large for a float."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotFinite(f"the number {text[:20]} is too large to be a finite float")
    return value


def _refuse(name: str) -> Any:
    raise NotFinite(f"{name} is not a JSON number")


def _null(name: str) -> None:
    return None


_STORED = json.JSONDecoder(parse_constant=_null)
_STRICT = json.JSONDecoder(parse_constant=_refuse, parse_float=_finite)


def loads(text: str | bytes) -> Any:
    """Parse JSON text; raise ValueError (`NotFinite` for a non-finite number) if it is not."""
    # json.loads, with one decoder rather than one a call (every webhook's body).
    if isinstance(text, bytes | bytearray):
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    elif text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _STRICT.decode(text)


def loads_stored(text: str | bytes) -> Any:
    """Parse JSON the bridge stored; `NaN` and `Infinity` left by older versions become null."""
    if isinstance(text, str) and not text.startswith("\ufeff"):
        return _STORED.decode(text)  # one decoder, not one a call (every claimed event)
    return json.loads(text, parse_constant=_null)


# The compact encoders, made once: `json.dumps` with any argument makes one a call, which
# costs more than encoding a small object (every delivery's CloudEvent envelope).
_COMPACT = {
    ascii: json.JSONEncoder(separators=(",", ":"), ensure_ascii=ascii, allow_nan=False)
    for ascii in (False, True)
}


def dumps(value: Any, *, indent: int | None = None, ensure_ascii: bool = False) -> str:
    """Strict JSON text: compact unless `indent`; ValueError for a number that is not finite."""
    if indent is None:
        return _COMPACT[ensure_ascii].encode(value)
    separators = (",", ": ")
    return json.dumps(
        value, indent=indent, separators=separators, ensure_ascii=ensure_ascii, allow_nan=False
    )

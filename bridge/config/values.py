"""The config's value types: durations, sizes, JMESPath expressions, URLs, secrets, names.

Each parses or checks a value once, when the config is read, so that the rest of the code
carries plain numbers (`*_s` seconds, bytes) and checked text. `_Model` is the base of every
config model: unknown keys refused, frozen, and URLs masked in reprs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any

import jmespath
import jmespath.exceptions
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    IPvAnyNetwork,
    SecretStr,
)

from bridge.masking import mask_url

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*\Z")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE_RE = re.compile(r"\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*\Z", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2,
    "gb": 1000**3, "gib": 1024**3,
}  # fmt: skip
# Keys whose values are secret: masked in every message.
SECRET_KEYS = frozenset(
    {
        "secret", "secrets", "admin_token", "token", "password", "headers", "params", "key",
        # a polled source's `auth:` (config/auth.py)
        "bearer", "header", "client_secret", "refresh_token",
    }
)  # fmt: skip


DEFAULT_RETRY_S = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


# -- value types ---------------------------------------------------------------------------


def parse_duration(value: Any) -> float:
    """Turn `250ms`, `5s`, `2m`, `1h`, `1d` or a number of seconds into seconds."""
    if isinstance(value, bool):
        raise ValueError("is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError(
            "is not a duration (a number and a unit: ms, s, m, h or d, as in 250ms, 5s, 2m,"
            " 1h, 7d; or a number of seconds)"
        )
    if seconds < 0:
        raise ValueError("is not a duration: it is negative")
    return seconds


def parse_size(value: Any) -> int:
    """Turn `1MiB`, `512KiB`, `1000` (bytes) into a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (m := _SIZE_RE.match(value)):
        unit = m.group(2).lower() if m.group(2) else None
        return int(m.group(1)) * _SIZE_UNITS[unit]
    raise ValueError("is not a size (use a number of bytes, or 64KiB, 1MiB)")


def _check_jmespath(value: str) -> str:
    try:
        jmespath.compile(value)
    except jmespath.exceptions.JMESPathError as exc:
        raise ValueError(f"is not a valid JMESPath expression ({exc.__class__.__name__})") from None
    return value


def field_path(expression: str) -> tuple[str, ...]:
    """The field names of a plain JMESPath field path (`a`, `a.b`, `"x-y"`); else ValueError."""
    out: list[str] = []
    todo: list[Any] = [jmespath.compile(expression).parsed]
    while todo:
        node = todo.pop(0)
        if node["type"] == "field":
            out.append(node["value"])
        elif node["type"] == "subexpression":
            todo[:0] = node["children"]
        else:
            raise ValueError(f'{expression!r} is not a field path (use a, a.b or "a-b")')
    return tuple(out)


def _check_http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("is not an http(s) URL")
    return value


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
JMESPath = Annotated[str, AfterValidator(_check_jmespath)]
HttpURL = Annotated[str, AfterValidator(_check_http_url)]
Secrets = Annotated[list[SecretStr], BeforeValidator(_one_or_many)]
# A list of names or globs, or a single one written alone (`events: "*"`).
OneOrMany = Annotated[list[str], BeforeValidator(_one_or_many)]
# Networks in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`); a bare address is one host.
Networks = Annotated[list[IPvAnyNetwork], BeforeValidator(_one_or_many)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # A URL may carry a password or a token: reprs show it masked, like every output.
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if isinstance(value, str) and "://" in value else value

"""The keys a place in the config accepts, and the one a misspelt key was probably meant to be.

Pure: walks the pydantic models of `models.py` along a key path, the way the YAML nests them,
so `sources.tickets.poll.evry` is checked against the keys of a poll (`every`, `url`, ...).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

# How close a key must be to a known one to be suggested (difflib's ratio).
CUTOFF = 0.6


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    """The models an annotation can hold at its own level (through unions and Annotated)."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        yield from _models_in(get_args(annotation)[0])
    elif origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            yield from _models_in(arg)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation


def _inner(annotation: Any) -> list[Any]:
    """What a dict's values or a list's items are, through unions and Annotated."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _inner(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [inner for arg in get_args(annotation) for inner in _inner(arg)]
    if origin is dict:
        return [get_args(annotation)[1]]
    if origin is list:
        return [get_args(annotation)[0]]
    return []


def _field(model: type[BaseModel], key: str) -> Any | None:
    for name, info in model.model_fields.items():
        if key in (info.alias, name):
            return info.annotation
    return None


def _step(annotations: list[Any], key: str | int) -> list[Any]:
    out: list[Any] = []
    for annotation in annotations:
        for model in _models_in(annotation):
            found = _field(model, str(key))
            if found is not None:
                out.append(found)
        out.extend(_inner(annotation))
    return out


def known_keys(root: type[BaseModel], path: tuple[str | int, ...]) -> list[str]:
    """The keys the mapping at `path` accepts (its fields' names as written), sorted."""
    annotations: list[Any] = [root]
    for key in path:
        annotations = _step(annotations, key)
    keys = {
        info.alias or name
        for annotation in annotations
        for model in _models_in(annotation)
        for name, info in model.model_fields.items()
        if not info.exclude
    }
    return sorted(keys)


def suggestion(key: str, known: list[str]) -> str | None:
    """The known key closest to `key`, when one is close enough."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=CUTOFF)
    return close[0] if close else None

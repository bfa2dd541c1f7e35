"""Reading a page's items one at a time out of its JSON text, without parsing it whole.

A page of a million small items parsed by `json.loads` is a million dicts at once: about
210 MB for 20 MB of text. `PageScan` walks the text down a plain field path (`data`,
`result.items`, or none when the page is the list itself) and yields each item of the list
there with the offset where it starts, parsed by the standard library's C scanner one item at
a time, so that the caller can index it and let it go. Every other value of the page is parsed
as usual into `body`, the page without its items, from which the next page is found.

The text is read as strictly as `jsontext.loads` reads it (no `NaN`, no `Infinity`, no
`1e400`); text that is not valid JSON raises NotJSON (where `json.loads` raises
ValueError) once the scan reaches the fault. `item_at` parses one item again from its
offset (the changed ones only).

Pure: no I/O. `stream_path` says which sources' pages can be read this way.
"""

from __future__ import annotations

import json
import json.decoder
import re
from collections.abc import Generator, Iterator
from typing import Any

import jmespath

from bridge import jsontext
from bridge.config import CursorPages, NextUrlPages, PollConfig, field_path

_DECODER = json.JSONDecoder(parse_constant=jsontext._refuse, parse_float=jsontext._finite)
_SPACE = re.compile(r"[ \t\n\r]*")
_WHITESPACE = frozenset(" \t\n\r")
_scanstring = json.decoder.scanstring  # type: ignore[attr-defined]


def decode_text(body: bytes, charset: str | None = None) -> str:
    """A page's bytes as text, as `json.loads` reads them: UTF-8, -16 or -32 (a BOM allowed)
    unless the content type names another charset."""
    if charset and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        return body.decode(charset).lstrip("\ufeff")
    encoding = json.detect_encoding(body)
    return body.decode(encoding, "surrogatepass").lstrip("\ufeff")


def item_at(text: str, start: int) -> Any:
    """The item that starts at `start` in `text`, parsed again."""
    return _DECODER.raw_decode(text, start)[0]


class NotJSON(Exception):
    """The page's text is not valid JSON (not a ValueError: what the caller does with each
    item may raise those, and must not be taken for the text's fault)."""


class NotAList(Exception):
    """The value at the items path is not a list (None when there is no such value)."""

    def __init__(self, found: Any) -> None:
        super().__init__("the items are not a list")
        self.found = found


class PageScan:
    """One pass over a page's text: `items()` yields (item, offset); then `body` is the page
    with an empty list in place of its items."""

    def __init__(self, text: str, path: tuple[str, ...]) -> None:
        self.text = text
        self.path = path
        self.body: Any = None

    def items(self) -> Iterator[tuple[Any, int]]:
        """Each item of the list at the path, with its offset, in order; raises NotJSON for
        text that is not JSON and NotAList when the path leads to no list."""
        text = self.text
        try:
            at = _SPACE.match(text, 0).end()  # type: ignore[union-attr]
            self.body, at = yield from self._value(at, self.path)
            end = _SPACE.match(text, at).end()  # type: ignore[union-attr]
            if end != len(text):
                raise json.JSONDecodeError("Extra data", text, end)
        except ValueError as exc:
            raise NotJSON(str(exc)) from exc

    def _value(
        self, at: int, path: tuple[str, ...]
    ) -> Generator[tuple[Any, int], None, tuple[Any, int]]:
        """Parse the value at `at`; stream the list at `path` below it. Returns the value
        (the streamed list left empty) and where it ends."""
        text = self.text
        if not path:
            if not text.startswith("[", at):
                raise NotAList(_DECODER.raw_decode(text, at)[0])
            yield from self._list(at)
            return [], self._list_end
        if not text.startswith("{", at):
            _DECODER.raw_decode(text, at)  # invalid JSON is said first
            raise NotAList(None)  # a field of something that is not an object: nothing
        out: dict[str, Any] = {}
        streamed = False
        at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
        if text.startswith("}", at):
            raise NotAList(None)
        while True:
            if not text.startswith('"', at):
                raise json.JSONDecodeError("Expecting property name", text, at)
            name, at = _scanstring(text, at + 1, True)
            at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
            if not text.startswith(":", at):
                raise json.JSONDecodeError("Expecting ':' delimiter", text, at)
            at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
            if name == path[0] and not streamed:
                streamed = True
                out[name], at = yield from self._value(at, path[1:])
            else:
                # A repeated name replaces the first as json.loads does; the items are the
                # first list's (what was yielded cannot be taken back).
                out[name], at = _DECODER.raw_decode(text, at)
            at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
            if text.startswith("}", at):
                break
            if not text.startswith(",", at):
                raise json.JSONDecodeError("Expecting ',' delimiter", text, at)
            at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
        if not streamed:
            raise NotAList(None)
        return out, at + 1

    def _list(self, at: int) -> Iterator[tuple[Any, int]]:
        # The C scanner itself, not `raw_decode` (a Python frame per item), and a look at
        # the next character before any regex: compact JSON has no whitespace to skip.
        text = self.text
        scan_once = _DECODER.scan_once  # type: ignore[attr-defined]
        space = _SPACE.match
        at = space(text, at + 1).end()  # type: ignore[union-attr]
        if text.startswith("]", at):
            self._list_end = at + 1
            return
        while True:
            try:
                item, end = scan_once(text, at)
            except StopIteration as exc:
                raise json.JSONDecodeError("Expecting value", text, exc.value) from None
            yield item, at
            mark = text[end : end + 1]
            if mark in _WHITESPACE:
                end = space(text, end).end()  # type: ignore[union-attr]
                mark = text[end : end + 1]
            if mark == ",":
                at = end + 1
                if text[at : at + 1] in _WHITESPACE:
                    at = space(text, at).end()  # type: ignore[union-attr]
            elif mark == "]":
                self._list_end = end + 1
                return
            else:
                raise json.JSONDecodeError("Expecting ',' delimiter", text, end)

    _list_end = 0


def stream_path(poll: PollConfig) -> tuple[str, ...] | None:
    """The field path of a source's items when its pages can be read item by item: `items`
    is a plain field path (or none), and finding the next page reads none of the items
    (Stripe's `data[-1].id` cursor does: its pages are parsed whole). A GraphQL answer
    (errors first, then `data`) and a feed are read whole."""
    if poll.request is not None or poll.format == "feed":
        return None
    try:
        path = field_path(poll.items) if poll.items else ()
    except ValueError:
        return None
    pages = poll.pages
    expression = (
        pages.next_url
        if isinstance(pages, NextUrlPages)
        else pages.cursor
        if isinstance(pages, CursorPages)
        else None
    )
    if expression is not None and (not path or path[0] in fields_of(expression)):
        return None
    return path


def fields_of(expression: str) -> set[str]:
    """Every field name a JMESPath expression reads, at any depth."""
    names: set[str] = set()
    todo: list[Any] = [jmespath.compile(expression).parsed]
    while todo:
        node = todo.pop()
        if not isinstance(node, dict):
            continue
        if node.get("type") == "field":
            names.add(node["value"])
        todo.extend(node.get("children", ()))
    return names

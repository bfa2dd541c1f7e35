"""The `Link` header of RFC 8288, as real servers send it.

A field holds comma-separated link values, `<target>; param=value; rel="next last"`. Real
servers quote parameters that hold commas and semicolons (`title="a, b"`), give several
relation types in one `rel` (space-separated, case-insensitive), send relative targets, and
split links over several `Link` fields. `next_link` finds the target of the first link whose
relations include `next`; the caller resolves it against the URL of the page that gave it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Link:
    """One link value: its target as written and its parameters (names lower-cased)."""

    target: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def rels(self) -> tuple[str, ...]:
        """The relation types, lower-cased (RFC 8288 section 3.3)."""
        return tuple(self.params.get("rel", "").lower().split())


class _Reader:
    """A cursor over one field value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def peek(self) -> str:
        return self.text[self.at] if self.at < len(self.text) else ""

    def skip_space(self) -> None:
        while self.peek() in (" ", "\t"):
            self.at += 1

    def until(self, stops: str) -> str:
        start = self.at
        while self.peek() and self.peek() not in stops:
            self.at += 1
        return self.text[start : self.at]

    def quoted(self) -> str:
        """A quoted-string, the reader on its opening quote; backslash escapes one character."""
        self.at += 1
        out: list[str] = []
        while (char := self.peek()) and char != '"':
            if char == "\\":
                self.at += 1
                char = self.peek()
            out.append(char)
            self.at += 1
        self.at += 1  # the closing quote (or the end of a broken value)
        return "".join(out)


def _param(reader: _Reader, link: Link) -> None:
    name = reader.until("=;,").strip().lower()
    value = ""
    if reader.peek() == "=":
        reader.at += 1
        reader.skip_space()
        value = reader.quoted() if reader.peek() == '"' else reader.until(";,").strip()
    # The first occurrence of a parameter counts (RFC 8288 section 3: rel, title, ...).
    if name and name not in link.params:
        link.params[name] = value


def parse_links(fields: Iterable[str]) -> list[Link]:
    """Every link value in these `Link` fields; a malformed rest of a field is ignored."""
    links: list[Link] = []
    for text in fields:
        reader = _Reader(text)
        while True:
            reader.skip_space()
            while reader.peek() == ",":
                reader.at += 1
                reader.skip_space()
            if reader.peek() != "<":
                break
            reader.at += 1
            link = Link(reader.until(">").strip())
            reader.at += 1
            while True:
                reader.skip_space()
                if reader.peek() != ";":
                    break
                reader.at += 1
                reader.skip_space()
                _param(reader, link)
            links.append(link)
            reader.skip_space()
            if reader.peek() not in (",", ""):
                break
    return links


def next_link(fields: Iterable[str]) -> str | None:
    """The target of the first link with the relation `next`, as written; None if none."""
    for link in parse_links(fields):
        if "next" in link.rels and link.target:
            return link.target
    return None

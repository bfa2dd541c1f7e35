"""The snapshot diff in bounded memory: a compact index of the answer, compared row by row.

`diff.py`'s index holds every item of an answer as a parsed object next to its version
token, and the stored snapshot is loaded whole as a dict: a million small items cost 750 MB.
Here an answer costs what its text costs plus about 160 bytes an item:

- `PageIndex` takes the items of each page as fetch.py reads them (one at a time, out of the
  page's text: see scan.py) and keeps, per key, 28 bytes: a 16-byte digest of the item's
  version token and where the item starts (its page and offset). The parsed item is let go.
- `PageIndex.compare` is handed the stored snapshot's (key, version) rows a chunk at a time
  (`PollStore.scan_poll_versions`): an unchanged key leaves the index, a stored key not in the
  answer is a delete. What stays in the index is what was created or updated.
- Only those items are parsed again, from the page text: for their events (`changes`) and
  for the rows the commit writes (`upserts`, read lazily by the store as it writes them).

The results are the same as `diff.diff` over `diff.index_items`: creates and updates in the
answer's order, then deletes in the snapshot's order, with the same version tokens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import logging
import struct
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from bridge.events import long_attribute
from bridge.poll.diff import (
    Indexed,
    ItemChange,
    ItemSpec,
    canonical_json,
    key_of,
    strip_ignored,
    version_token,
)
from bridge.poll.scan import item_at

log = logging.getLogger("bridge.poll")

_WHERE = struct.Struct("<IQ")  # the page's number, the item's offset in it
_DIGEST_BYTES = 16
# Over this many items a poll gives the memory it freed back to the system (see trim_memory).
TRIM_ITEMS = 50_000

Page = str | list[Any]  # a page's text, or its parsed items when it could not be scanned


def token_digest(item: Any, spec: ItemSpec) -> bytes:
    """16 bytes that differ when `diff.version_token` differs (without making that text)."""
    if spec.version is not None:
        version = spec.version(item)
        if version is not None:
            return stored_digest("v:" + canonical_json(version))
    text = canonical_json(strip_ignored(item, spec.ignore) if spec.ignore else item)
    return hashlib.blake2b(
        text.encode("utf-8", "surrogatepass"), digest_size=_DIGEST_BYTES
    ).digest()


def stored_digest(token: str) -> bytes:
    """The digest of a stored version token, as `token_digest` gives it for the same item."""
    if token.startswith("h:") and len(token) == 2 + 2 * _DIGEST_BYTES:
        try:
            return bytes.fromhex(token[2:])  # `h:` is the hex of this very digest
        except ValueError:
            pass
    # A `v:` token (or anything else stored) hashed whole: 16 bytes of blake2b cannot
    # collide with a `h:` digest in practice.
    return hashlib.blake2b(
        token.encode("utf-8", "surrogatepass"), digest_size=_DIGEST_BYTES, person=b"v"
    ).digest()


def _encode(item: Any) -> str:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False)


class PageIndex:
    """An answer's items by key as digest and place, built page by page (fetch.py's sink)."""

    def __init__(self, spec: ItemSpec) -> None:
        self.spec = spec
        self.pages: list[Page] = []
        self.by_key: dict[str, bytes] = {}
        self.indexed = Indexed()  # its counts; its items stay empty
        self.updated: set[str] = set()
        self.deleted: list[tuple[str, str]] = []  # (key, stored token), in the store's order

    def add_page(self, page: Page, items: Iterable[tuple[Any, int]]) -> int:
        """Index one page's items, each with where it starts in `page` (its offset in the
        text, or its place in the list), by the rules of `diff.index_items`; how many."""
        number = len(self.pages)
        self.pages.append(page)
        by_key, spec, counts = self.by_key, self.spec, self.indexed
        get_id, where = spec.id, _WHERE.pack
        taken = 0
        for taken, (item, at) in enumerate(items, 1):  # noqa: B007 - counted
            key = key_of(get_id(item)) if isinstance(item, dict) else None
            if key is None:
                counts.skipped += 1
                continue
            if long_attribute(key=key) is not None:
                counts.too_long += 1
                continue
            if key in by_key:
                counts.duplicates += 1
                del by_key[key]  # the last one wins, and takes the last place in the order
            by_key[key] = token_digest(item, spec) + where(number, at)
        counts.total = len(by_key)
        return taken

    def item(self, entry: bytes) -> Any:
        """The item an index entry points at, parsed again from its page."""
        number, at = _WHERE.unpack_from(entry, _DIGEST_BYTES)
        page = self.pages[number]
        return page[at] if isinstance(page, list) else item_at(page, at)

    def compare(self, rows: Iterable[tuple[str, str]]) -> None:
        """Compare stored (key, version token) rows with the index; call once per chunk."""
        by_key, updated, deleted = self.by_key, self.updated, self.deleted
        for key, token in rows:
            entry = by_key.get(key)
            if entry is None:
                deleted.append((key, token))
            elif entry[:_DIGEST_BYTES] == stored_digest(token):
                del by_key[key]  # unchanged: nothing more to do with it
            else:
                updated.add(key)

    @property
    def change_count(self) -> int:
        """How many keys were created, updated or deleted (once `compare` saw every row)."""
        return len(self.by_key) + len(self.deleted)

    def changes(self) -> list[ItemChange]:
        """The changes, each with its item parsed again: as `diff.diff` lists them."""
        out = []
        for key, entry in self.by_key.items():
            item = self.item(entry)
            token = version_token(item, self.spec)
            if key in self.updated:
                out.append(ItemChange("updated", key, token, item))
            else:
                out.append(ItemChange("created", key, token, item))
        out.extend(ItemChange("deleted", key, token) for key, token in self.deleted)
        return out

    def upserts(self) -> Upserts:
        """The snapshot rows this poll writes, made as the store reads them."""
        return Upserts(self)


class Upserts(Collection[tuple[str, str, str]]):
    """(key, version token, item as JSON) of the created and updated keys, made one at a
    time each time they are read: a baseline of a million items never exists as rows."""

    def __init__(self, index: PageIndex) -> None:
        self._index = index

    def __len__(self) -> int:
        return len(self._index.by_key)

    def __iter__(self) -> Iterator[tuple[str, str, str]]:
        index = self._index
        for key, entry in index.by_key.items():
            item = index.item(entry)
            yield key, version_token(item, index.spec), _encode(item)

    def __contains__(self, row: object) -> bool:
        return any(row == mine for mine in self)


# glibc's mallopt parameter: allocations this large or larger are mapped on their own.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 1024 * 1024


def map_large_blocks() -> None:
    """Have glibc map each block of 1 MiB or more on its own, and unmap it when freed.

    By default glibc raises that threshold (up to 32 MiB) each time such a block is freed,
    so a big poll's page texts and tables then land in the heap, where freeing them gives
    nothing back. Elsewhere than glibc, nothing.
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


def trim_memory() -> None:
    """Give freed heap memory back to the system (glibc's `malloc_trim`; elsewhere nothing).

    CPython frees a big poll's objects into glibc's heap, which keeps most of it: without
    this the daemon's RSS stays at the peak of its largest poll.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


_LIBC: Any = None


def _libc() -> Any:
    """glibc, or None (another C library, or none found)."""
    global _LIBC
    if _LIBC is None:
        _LIBC = False
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt"):
                _LIBC = libc
        except OSError:
            pass
        if not _LIBC:
            log.debug("not glibc: freed memory is given back as the C library does")
    return _LIBC or None

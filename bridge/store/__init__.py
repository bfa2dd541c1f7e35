"""The store: events, their outbox, poll state and targets' state (see base.py)."""

from __future__ import annotations

from bridge.errors import StoreError
from bridge.store.base import NewEvent, Store

__all__ = ["NewEvent", "Store", "open_store"]


def open_store(location: str) -> Store:
    """The store for `location`: a file path means SQLite. The store is not opened yet."""
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise StoreError(f"database URLs of scheme {scheme!r} are not supported yet")
    from bridge.store.sqlite import SQLiteStore

    return SQLiteStore(location)

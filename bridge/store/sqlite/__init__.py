"""The SQLite backend of the store: one file, WAL mode, FULL sync, one group-committing writer."""

from __future__ import annotations

from bridge.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]

"""SQLite implementation of `PollStore`: snapshots, validators and stats of polled sources."""

from __future__ import annotations


class SQLitePollState:
    """Mixed into SQLiteStore; uses its `read` and `write` helpers."""

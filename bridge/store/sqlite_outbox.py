"""SQLite implementation of `OutboxStore`: claiming deliveries, attempts, targets' state."""

from __future__ import annotations


class SQLiteOutbox:
    """Mixed into SQLiteStore; uses its `read` and `write` helpers."""

"""The PostgreSQL backend of the store: a psycopg pool on the store's own event loop thread."""

from __future__ import annotations

from bridge.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]

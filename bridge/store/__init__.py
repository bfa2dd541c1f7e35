"""The store: events, their outbox, poll state and targets' state (see base.py)."""

from __future__ import annotations

import os
import socket

from bridge.errors import MissingExtra, StoreError
from bridge.masking import mask_url
from bridge.store.base import NewEvent, Store

__all__ = ["NewEvent", "Store", "default_replica_id", "mask_url", "open_store"]

POSTGRES_SCHEMES = ("postgresql", "postgres")


def default_replica_id() -> str:
    """This process's name among replicas when none is given: host name and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


def open_store(location: str, replica_id: str | None = None) -> Store:
    """The store for `location`: a path means SQLite, a `postgresql://` URL PostgreSQL.

    The store is not opened yet. `replica_id` names this process among the bridges that
    share the database (default: host name and pid).
    """
    replica_id = replica_id or default_replica_id()
    if "://" in location:
        scheme = location.split("://", 1)[0].lower()
        if scheme not in POSTGRES_SCHEMES:
            raise StoreError(f"database URLs of scheme {scheme!r} are not supported")
        try:
            from bridge.store.postgres import PostgresStore
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("psycopg"):
                raise
            raise MissingExtra("a postgresql:// database", "psycopg", "postgres") from None
        return PostgresStore(location, replica_id=replica_id)
    from bridge.store.sqlite import SQLiteStore

    return SQLiteStore(location, replica_id=replica_id)

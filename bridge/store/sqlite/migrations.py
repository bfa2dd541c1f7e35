"""Named schema migrations for the SQLite store, applied in order and recorded in `_migrations`.

A migration is a function of a `sqlite_utils.Database`; it runs once, inside one
transaction with the row that records it. Never edit a released migration: add a new one.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

Migration = Callable[[sqlite_utils.Database], None]


def m0001_initial(db: sqlite_utils.Database) -> None:
    """Events with their outbox, poll state, targets' state."""
    db.table("events").create(
        {
            "seq": int,
            "id": str,
            "source": str,
            "type": str,
            "origin": str,
            "change": str,
            "subject": str,
            "upstream_id": str,
            "time_ms": int,
            "recorded_ms": int,
            "data": str,
        },
        pk="seq",
        not_null={"id", "source", "type", "origin", "recorded_ms"},
    )
    db.table("events").create_index(["id"], unique=True)
    db.table("events").create_index(["source", "seq"])
    db.table("events").create_index(["type"])

    db.table("deliveries").create(
        {
            "id": int,
            "event_id": str,
            "target": str,
            "status": str,
            "attempts": int,
            "next_ms": int,
            "lease_ms": int,
            "created_ms": int,
            "delivered_ms": int,
            "last_code": int,
            "last_error": str,
        },
        pk="id",
        not_null={"event_id", "target", "status", "attempts", "next_ms", "created_ms"},
        defaults={"status": "pending", "attempts": 0},
    )
    db.table("deliveries").create_index(["event_id", "target"], unique=True)
    db.table("deliveries").create_index(["status", "next_ms"])
    db.table("deliveries").create_index(["target", "status"])

    db.table("attempts").create(
        {
            "id": int,
            "delivery_id": int,
            "event_id": str,
            "target": str,
            "at_ms": int,
            "duration_ms": int,
            "status_code": int,
            "response": str,
            "error": str,
        },
        pk="id",
        not_null={"delivery_id", "event_id", "target", "at_ms"},
    )
    db.table("attempts").create_index(["delivery_id"])

    db.table("targets").create(
        {
            "name": str,
            "disabled_ms": int,
            "disabled_reason": str,
            "circuit": str,
            "failures": int,
            "open_until_ms": int,
            "cooldown_s": float,
        },
        pk="name",
        defaults={"circuit": "closed", "failures": 0},
    )

    db.table("poll_items").create(
        {"source": str, "key": str, "version": str, "item": str},
        pk=("source", "key"),
        not_null={"source", "key", "version"},
    )

    db.table("poll_state").create(
        {
            "source": str,
            "etag": str,
            "last_modified": str,
            "baselined": int,
            "last_poll_ms": int,
            "last_duration_ms": int,
            "last_status": int,
            "last_error": str,
            "consecutive_failures": int,
            "requests": int,
            "not_modified": int,
            "bytes": int,
            "items": int,
            "events": int,
            "empty_polls": int,
            "skipped": int,
            "duplicate_keys": int,
            "interval_s": float,
        },
        pk="source",
        defaults={
            "baselined": 0,
            "consecutive_failures": 0,
            "requests": 0,
            "not_modified": 0,
            "bytes": 0,
            "items": 0,
            "events": 0,
            "empty_polls": 0,
            "skipped": 0,
            "duplicate_keys": 0,
        },
    )


def m0002_poll_stats(db: sqlite_utils.Database) -> None:
    """Poll state: the snapshot generation (part of event ids) and more stats."""
    table = db.table("poll_state")
    table.add_column("generation", int, not_null_default=0)
    table.add_column("polls", int, not_null_default=0)
    table.add_column("failures", int, not_null_default=0)
    table.add_column("last_ok_ms", int)
    table.add_column("last_error_ms", int)
    table.add_column("saved_requests", float, not_null_default=0)


def m0003_due_deliveries(db: sqlite_utils.Database) -> None:
    """An index of waiting deliveries by target and due time, for claiming them in order."""
    # Partial: delivered and dead rows, the bulk of the table over time, stay out of it.
    db.execute(
        "CREATE INDEX deliveries_due ON deliveries (target, next_ms)"
        " WHERE status IN ('pending', 'failed')"
    )


def m0004_replicas(db: sqlite_utils.Database) -> None:
    """Replicas' heartbeats, poll leases per source, and who holds a delivery's lease."""
    db.table("replicas").create(
        {"id": str, "started_ms": int, "heartbeat_ms": int},
        pk="id",
        not_null={"started_ms", "heartbeat_ms"},
    )
    db.table("poll_leases").create(
        {"source": str, "owner": str, "until_ms": int, "handover_ms": int},
        pk="source",
        not_null={"owner", "until_ms"},
    )
    db.table("deliveries").add_column("lease_owner", str)


def m0005_poll_cursor(db: sqlite_utils.Database) -> None:
    """Poll state: where an incremental or feed poll resumes, and a feed's gaps."""
    table = db.table("poll_state")
    table.add_column("cursor", str)
    table.add_column("gaps", int, not_null_default=0)


def m0006_sightings(db: sqlite_utils.Database) -> None:
    """Each path's sighting of a merged event (merge of a webhook and a polled source)."""
    db.table("sightings").create(
        {"event_id": str, "merge": str, "path": str, "source": str, "recorded_ms": int},
        pk=("event_id", "path"),
        not_null={"merge", "source", "recorded_ms"},
    )
    db.execute("CREATE INDEX sightings_merge ON sightings (merge, recorded_ms)")


def m0007_admin_pages(db: sqlite_utils.Database) -> None:
    """Indexes for the admin pages: events by (recorded_ms, id) for keyset paging, attempts
    by event (an event's page) and by target (a target's last attempts)."""
    db.execute("CREATE INDEX events_recorded ON events (recorded_ms, id)")
    db.execute("CREATE INDEX attempts_event ON attempts (event_id, id)")
    db.execute("CREATE INDEX attempts_target ON attempts (target, id)")


def m0008_outbound(db: sqlite_utils.Database) -> None:
    """Events keep their trace context; deliveries their event's subject (for `ordering:
    subject`) and whether a transform shaped what was sent."""
    db.table("events").add_column("traceparent", str)
    db.table("events").add_column("tracestate", str)
    deliveries = db.table("deliveries")
    deliveries.add_column("subject", str)
    deliveries.add_column("transformed", int, not_null_default=0)
    # Deliveries waiting at the upgrade take their event's subject, so their order holds too.
    db.execute(
        "UPDATE deliveries SET subject = (SELECT subject FROM events WHERE events.id ="
        " deliveries.event_id) WHERE status IN ('pending', 'failed')"
    )
    # The claim of an ordered target asks, per candidate, for an earlier waiting delivery of
    # the same subject: this index answers it with one seek.
    db.execute(
        "CREATE INDEX deliveries_subject ON deliveries (target, subject, id)"
        " WHERE status IN ('pending', 'failed') AND subject IS NOT NULL"
    )


def m0009_revoked_sessions(db: sqlite_utils.Database) -> None:
    """The admin sessions logged out before their cookie expires (refused after a restart)."""
    db.table("revoked_sessions").create(
        {"id": str, "expires_ms": int}, pk="id", not_null={"expires_ms"}
    )


def m0010_poll_pending(db: sqlite_utils.Database) -> None:
    """The keys of a snapshot that the last walks lacked, not deleted until confirmed."""
    db.table("poll_pending").create(
        {"source": str, "key": str, "walks": int, "since_ms": int},
        pk=("source", "key"),
        not_null={"walks", "since_ms"},
    )
    db.table("poll_state").add_column("pending_deletes", int, not_null_default=0)


def m0011_retry_from(db: sqlite_utils.Database) -> None:
    """A redelivery keeps a delivery's count of attempts; its retry schedule starts again
    from `retry_from`, the attempts made before it."""
    db.table("deliveries").add_column("retry_from", int, not_null_default=0)


def m0012_oauth_refresh_tokens(db: sqlite_utils.Database) -> None:
    """The refresh token each OAuth2 credential's token endpoint last rotated."""
    db.table("oauth_refresh_tokens").create(
        {"credential": str, "initial_hash": str, "refresh_token": str, "rotated_ms": int},
        pk="credential",
        not_null={"initial_hash", "refresh_token", "rotated_ms"},
    )


def m0013_delivery_claims(db: sqlite_utils.Database) -> None:
    """Nothing to do in SQLite: the index of waiting deliveries (0003) ends with each row's
    rowid, the delivery's id, so it already lists them in the order they are claimed (by
    `next_ms`, then id). PostgreSQL's index does not, and gets one that does (and room in
    its pages for the claims' leases)."""


def m0014_attempts_by_delivery(db: sqlite_utils.Database) -> None:
    """An event's attempts are found through its deliveries (`idx_attempts_delivery_id`), no
    longer by an index of their event ids (0007): event ids are hashes, so that index took a
    page at random for each attempt recorded, about half the pages a flush of outcomes wrote
    to the WAL (15 of some 60 µs of SQLite per delivered event)."""
    db.execute("DROP INDEX IF EXISTS attempts_event")


def m0015_deliveries_by_event_seq(db: sqlite_utils.Database) -> None:
    """A delivery names its event by its `seq` too, and is unique by (event_seq, target).

    Event ids are hashes, so the unique index of (event_id, target) took a page at random for
    each delivery stored: with one target, about a third of the WAL a commit of webhooks
    wrote and of the writer thread's CPU. An event's seq grows with each event stored, so its
    index is written at its end. Deliveries are found by their event through it, the event's
    own row by its seq (its rowid). A delivery whose event is gone keeps none (nothing can
    claim it, as before). A version before this one that still opens the database (rolled
    back to, or an older CLI's `bridge redeliver`) stores deliveries without a seq: the
    trigger gives them theirs, or none of them would ever be claimed."""
    db.execute("ALTER TABLE deliveries ADD COLUMN event_seq INTEGER")
    db.execute(
        "UPDATE deliveries SET event_seq = (SELECT seq FROM events WHERE events.id ="
        " deliveries.event_id)"
    )
    db.execute("CREATE UNIQUE INDEX deliveries_event ON deliveries (event_seq, target)")
    db.execute("DROP INDEX IF EXISTS idx_deliveries_event_id_target")
    db.execute(
        "CREATE TRIGGER deliveries_event_seq AFTER INSERT ON deliveries"
        " WHEN NEW.event_seq IS NULL BEGIN"
        " UPDATE deliveries SET event_seq = (SELECT seq FROM events WHERE id = NEW.event_id)"
        " WHERE id = NEW.id; END"
    )


MIGRATIONS: list[tuple[str, Migration]] = [
    ("0001_initial", m0001_initial),
    ("0002_poll_stats", m0002_poll_stats),
    ("0003_due_deliveries", m0003_due_deliveries),
    ("0004_replicas", m0004_replicas),
    ("0005_poll_cursor", m0005_poll_cursor),
    ("0006_sightings", m0006_sightings),
    ("0007_admin_pages", m0007_admin_pages),
    ("0008_outbound", m0008_outbound),
    ("0009_revoked_sessions", m0009_revoked_sessions),
    ("0010_poll_pending", m0010_poll_pending),
    ("0011_retry_from", m0011_retry_from),
    ("0012_oauth_refresh_tokens", m0012_oauth_refresh_tokens),
    ("0013_delivery_claims", m0013_delivery_claims),
    ("0014_attempts_by_delivery", m0014_attempts_by_delivery),
    ("0015_deliveries_by_event_seq", m0015_deliveries_by_event_seq),
]

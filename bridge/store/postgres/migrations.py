"""Named schema migrations for the PostgreSQL store: the SQLite ones, in PostgreSQL's dialect.

Same names, same tables and columns, recorded in the same `_migrations` table, so both
backends are at the same version after the same migrations. Times are BIGINT milliseconds;
event data and poll items stay JSON text, as written (key order kept). Never edit a
released migration: add a new one, here and in sqlite/migrations.py.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[str, tuple[str, ...]]] = [
    (
        "0001_initial",
        (
            """CREATE TABLE events (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                id TEXT NOT NULL,
                source TEXT NOT NULL,
                type TEXT NOT NULL,
                origin TEXT NOT NULL,
                change TEXT,
                subject TEXT,
                upstream_id TEXT,
                time_ms BIGINT,
                recorded_ms BIGINT NOT NULL,
                data TEXT
            )""",
            "CREATE UNIQUE INDEX idx_events_id ON events (id)",
            "CREATE INDEX idx_events_source_seq ON events (source, seq)",
            "CREATE INDEX idx_events_type ON events (type)",
            """CREATE TABLE deliveries (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                event_id TEXT NOT NULL,
                target TEXT NOT NULL,
                status TEXT NOT NULL DEFAULT 'pending',
                attempts INTEGER NOT NULL DEFAULT 0,
                next_ms BIGINT NOT NULL,
                lease_ms BIGINT,
                created_ms BIGINT NOT NULL,
                delivered_ms BIGINT,
                last_code INTEGER,
                last_error TEXT
            )""",
            "CREATE UNIQUE INDEX idx_deliveries_event_id_target ON deliveries (event_id, target)",
            "CREATE INDEX idx_deliveries_status_next_ms ON deliveries (status, next_ms)",
            "CREATE INDEX idx_deliveries_target_status ON deliveries (target, status)",
            """CREATE TABLE attempts (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                delivery_id BIGINT NOT NULL,
                event_id TEXT NOT NULL,
                target TEXT NOT NULL,
                at_ms BIGINT NOT NULL,
                duration_ms BIGINT,
                status_code INTEGER,
                response TEXT,
                error TEXT
            )""",
            "CREATE INDEX idx_attempts_delivery_id ON attempts (delivery_id)",
            """CREATE TABLE targets (
                name TEXT PRIMARY KEY,
                disabled_ms BIGINT,
                disabled_reason TEXT,
                circuit TEXT DEFAULT 'closed',
                failures INTEGER DEFAULT 0,
                open_until_ms BIGINT,
                cooldown_s DOUBLE PRECISION
            )""",
            """CREATE TABLE poll_items (
                source TEXT NOT NULL,
                key TEXT NOT NULL,
                version TEXT NOT NULL,
                item TEXT,
                PRIMARY KEY (source, key)
            )""",
            """CREATE TABLE poll_state (
                source TEXT PRIMARY KEY,
                etag TEXT,
                last_modified TEXT,
                baselined BOOLEAN NOT NULL DEFAULT false,
                last_poll_ms BIGINT,
                last_duration_ms BIGINT,
                last_status INTEGER,
                last_error TEXT,
                consecutive_failures INTEGER NOT NULL DEFAULT 0,
                requests BIGINT NOT NULL DEFAULT 0,
                not_modified BIGINT NOT NULL DEFAULT 0,
                bytes BIGINT NOT NULL DEFAULT 0,
                items BIGINT NOT NULL DEFAULT 0,
                events BIGINT NOT NULL DEFAULT 0,
                empty_polls BIGINT NOT NULL DEFAULT 0,
                skipped BIGINT NOT NULL DEFAULT 0,
                duplicate_keys BIGINT NOT NULL DEFAULT 0,
                interval_s DOUBLE PRECISION
            )""",
        ),
    ),
    (
        "0002_poll_stats",
        (
            "ALTER TABLE poll_state ADD COLUMN generation BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE poll_state ADD COLUMN polls BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE poll_state ADD COLUMN failures BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE poll_state ADD COLUMN last_ok_ms BIGINT",
            "ALTER TABLE poll_state ADD COLUMN last_error_ms BIGINT",
            "ALTER TABLE poll_state ADD COLUMN saved_requests DOUBLE PRECISION NOT NULL DEFAULT 0",
        ),
    ),
    (
        "0003_due_deliveries",
        (
            "CREATE INDEX deliveries_due ON deliveries (target, next_ms)"
            " WHERE status IN ('pending', 'failed')",
        ),
    ),
    (
        "0004_replicas",
        (
            """CREATE TABLE replicas (
                id TEXT PRIMARY KEY,
                started_ms BIGINT NOT NULL,
                heartbeat_ms BIGINT NOT NULL
            )""",
            """CREATE TABLE poll_leases (
                source TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                until_ms BIGINT NOT NULL,
                handover_ms BIGINT
            )""",
            "ALTER TABLE deliveries ADD COLUMN lease_owner TEXT",
        ),
    ),
    (
        "0005_poll_cursor",
        (
            "ALTER TABLE poll_state ADD COLUMN cursor TEXT",
            "ALTER TABLE poll_state ADD COLUMN gaps BIGINT NOT NULL DEFAULT 0",
        ),
    ),
    (
        "0006_sightings",
        (
            """CREATE TABLE sightings (
                event_id TEXT NOT NULL,
                merge TEXT NOT NULL,
                path TEXT NOT NULL,
                source TEXT NOT NULL,
                recorded_ms BIGINT NOT NULL,
                PRIMARY KEY (event_id, path)
            )""",
            "CREATE INDEX sightings_merge ON sightings (merge, recorded_ms)",
        ),
    ),
    (
        "0007_admin_pages",
        (
            "CREATE INDEX events_recorded ON events (recorded_ms, id)",
            "CREATE INDEX attempts_event ON attempts (event_id, id)",
            "CREATE INDEX attempts_target ON attempts (target, id)",
        ),
    ),
    (
        "0008_outbound",
        (
            "ALTER TABLE events ADD COLUMN traceparent TEXT",
            "ALTER TABLE events ADD COLUMN tracestate TEXT",
            "ALTER TABLE deliveries ADD COLUMN subject TEXT",
            "ALTER TABLE deliveries ADD COLUMN transformed BOOLEAN NOT NULL DEFAULT false",
            "UPDATE deliveries d SET subject = e.subject FROM events e"
            " WHERE e.id = d.event_id AND d.status IN ('pending', 'failed')",
            "CREATE INDEX deliveries_subject ON deliveries (target, subject, id)"
            " WHERE status IN ('pending', 'failed') AND subject IS NOT NULL",
        ),
    ),
    (
        "0009_revoked_sessions",
        ("CREATE TABLE revoked_sessions (id TEXT PRIMARY KEY, expires_ms BIGINT NOT NULL)",),
    ),
    (
        "0010_poll_pending",
        (
            """CREATE TABLE poll_pending (
                source TEXT NOT NULL,
                key TEXT NOT NULL,
                walks BIGINT NOT NULL,
                since_ms BIGINT NOT NULL,
                PRIMARY KEY (source, key)
            )""",
            "ALTER TABLE poll_state ADD COLUMN pending_deletes BIGINT NOT NULL DEFAULT 0",
        ),
    ),
    (
        "0011_retry_from",
        ("ALTER TABLE deliveries ADD COLUMN retry_from BIGINT NOT NULL DEFAULT 0",),
    ),
    (
        "0012_oauth_refresh_tokens",
        (
            """CREATE TABLE oauth_refresh_tokens (
                credential TEXT PRIMARY KEY,
                initial_hash TEXT NOT NULL,
                refresh_token TEXT NOT NULL,
                rotated_ms BIGINT NOT NULL
            )""",
        ),
    ),
    (
        # Due deliveries in the order they are claimed (next_ms, then id): the claim reads the
        # first rows of the index and stops, where an index of (target, next_ms) alone made it
        # read and sort every due row of the target (a backlog of 10,000: 3 ms per claim).
        # And half of each new page of deliveries left free: a claim's lease (columns no
        # index holds) is then written beside its row as a heap-only tuple, not as a new
        # entry in five or six of the table's indexes (about a tenth of the server's CPU per
        # delivered event), for at most twice the pages of the outbox.
        "0013_delivery_claims",
        (
            "CREATE INDEX deliveries_due_in_order ON deliveries (target, next_ms, id)"
            " WHERE status IN ('pending', 'failed')",
            "DROP INDEX deliveries_due",
            "ALTER TABLE deliveries SET (fillfactor = 50)",
        ),
    ),
    (
        # An event's attempts are found through its deliveries (idx_attempts_delivery_id):
        # an index of attempts by event id (a hash) takes a page at random per attempt.
        "0014_attempts_by_delivery",
        ("DROP INDEX IF EXISTS attempts_event",),
    ),
    (
        # SQLite's deliveries name their event by its seq, so that their unique index is
        # written at its end rather than at a page chosen by the event id's hash. Nothing
        # here yet: PostgreSQL's deliveries keep their unique (event_id, target) index, and
        # their queries their event id.
        "0015_deliveries_by_event_seq",
        (),
    ),
]

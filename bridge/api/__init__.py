"""The HTTP API for scripts and dashboards, `/api/v1` (FastAPI, mounted in the daemon's app).

    app.py       the FastAPI app, its OpenAPI 3.1 spec, the `Api` component the daemon mounts
    guard.py     who may call it: the admin token as a bearer, or loopback without one; never
                 a cookie, and no change a browser's page asks for
    problems.py  every error as `application/problem+json` (RFC 9457) with a stable `type`
    models.py    the answers' shapes (the spec is generated from them)
    events.py    events: the list (filters, keyset cursors), one event, redeliveries
    targets.py   targets: health, circuit, backlog; enable, disable, reset
    sources.py   sources: the status summary, one source, poll now
    stream.py    the Server-Sent Events of newly stored events, resumable by Last-Event-ID

The API calls the store operations the CLI and the admin pages call, so the three agree.
"""

# Where the daemon mounts the API (`bridge check` names it without importing the app).
PREFIX = "/api/v1"

"""The daemon: one lifespan that opens the store, starts the engines and serves HTTP.

`lifespan` owns the resources and the signals, `app` is the Starlette app (health, metrics
and the engines' routes), `reload` applies a new config on SIGHUP, `notify` talks to systemd,
`heartbeat` keeps this replica's row alive and `janitor` deletes old delivered events.
"""

from __future__ import annotations

from bridge.daemon.lifespan import Daemon, bind, run

__all__ = ["Daemon", "bind", "run"]

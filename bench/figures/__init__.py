"""The figures of `make bench`, in the order they run. Each is `run(ctx) -> list[Row]`."""

from __future__ import annotations

from collections.abc import Callable

from bench.context import Context
from bench.figures import (
    admin_pages,
    delivery,
    e2e,
    idle,
    ingest,
    ordering,
    peer,
    poll_diff,
    poll_incremental,
    poll_scale,
    scale_out,
)
from bench.stats import Row

Figure = Callable[[Context], list[Row]]

FIGURES: dict[str, Figure] = {
    "ingest": ingest.run,
    "peer": peer.run,
    "delivery": delivery.run,
    "ordering": ordering.run,
    "e2e": e2e.run,
    "e2e-disk": e2e.run_with_neighbour,
    "poll-diff": poll_diff.run,
    "poll-incremental": poll_incremental.run,
    "poll-scale": poll_scale.run,
    "poll-scale-10k": poll_scale.run_10k,
    "idle": idle.run,
    "scale-out": scale_out.run,
    "admin-pages": admin_pages.run,
}

# The goals in words, shown even when a figure cannot run.
GOALS: dict[str, str] = {
    "ingest": ">= 0.65x accepted/s; <= 150 µs CPU per accepted webhook; p99 < 20 ms at 1,000 req/s",
    "peer": ">= 1.2x the peer's accepted/s",
    "delivery": ">= 0.6x events/s",
    "ordering": ">= 0.8x events/s of the same target unordered",
    "e2e": "p50 < 5 ms, p99 < 25 ms",
    "e2e-disk": "p99 < 50 ms with a process making fsync'd writes throughout",
    "poll-diff": "< 1 s CPU per poll, < 300 MB peak RSS",
    "poll-incremental": "<= 0.02x the snapshot's bytes (50x fewer), < 10 ms CPU per poll",
    "poll-scale": "lag p99 < 100 ms",
    "poll-scale-10k": "lag p99 < 100 ms, under half a core (10,000 sources every 60 s)",
    "idle": "none set (report only)",
    "scale-out": "none set (the cost of sharing one PostgreSQL)",
    "admin-pages": "< 100 ms for the first and the hundredth page of 1,000,000 events",
}

# The names in the table (the keys above are for --only).
TITLES: dict[str, str] = {
    "ingest": "ingest",
    "peer": "ingest vs peer",
    "delivery": "delivery",
    "ordering": "ordering by subject",
    "e2e": "end to end",
    "e2e-disk": "end to end, disk neighbour",
    "poll-diff": "poll diff",
    "poll-incremental": "poll incremental",
    "poll-scale": "poll scale",
    "poll-scale-10k": "poll scale 10k",
    "idle": "idle cost",
    "scale-out": "scale-out",
    "admin-pages": "admin pages",
}

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
    poll_diff,
    poll_incremental,
    poll_scale,
    scale_out,
)
from bench.stats import Row

Figure = Callable[[Context], list[Row]]

FIGURES: dict[str, Figure] = {
    "ingest": ingest.run,
    "delivery": delivery.run,
    "ordering": ordering.run,
    "e2e": e2e.run,
    "poll-diff": poll_diff.run,
    "poll-incremental": poll_incremental.run,
    "poll-scale": poll_scale.run,
    "idle": idle.run,
    "scale-out": scale_out.run,
    "admin-pages": admin_pages.run,
}

# The goals in words, shown even when a figure cannot run.
GOALS: dict[str, str] = {
    "ingest": ">= 0.5x accepted/s; p99 < 20 ms at 1,000 req/s",
    "delivery": ">= 0.5x events/s",
    "ordering": ">= 0.8x events/s of the same target unordered",
    "e2e": "p50 < 5 ms, p99 < 25 ms",
    "poll-diff": "< 1 s CPU per poll, < 300 MB peak RSS",
    "poll-incremental": "<= 0.02x the snapshot's bytes (50x fewer), < 10 ms CPU per poll",
    "poll-scale": "lag p99 < 100 ms",
    "idle": "none set (report only)",
    "scale-out": "none set (the cost of sharing one PostgreSQL)",
    "admin-pages": "< 100 ms for the first and the hundredth page of 1,000,000 events",
}

# The names in the table (the keys above are for --only).
TITLES: dict[str, str] = {
    "ingest": "ingest",
    "delivery": "delivery",
    "ordering": "ordering by subject",
    "e2e": "end to end",
    "poll-diff": "poll diff",
    "poll-incremental": "poll incremental",
    "poll-scale": "poll scale",
    "idle": "idle cost",
    "scale-out": "scale-out",
    "admin-pages": "admin pages",
}

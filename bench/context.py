"""What every figure gets: the run's settings (quick or full) and a scratch folder."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from bench.procs import NotAvailable


@dataclass(frozen=True)
class Settings:
    """Sizes and durations of one run; `quick()` fits `make bench-quick` in under 2 minutes."""

    quick: bool
    ingest_s: float  # closed-loop throughput, each side
    ingest_concurrency: int
    rate_s: float  # open-loop at 1,000 req/s, each side
    delivery_events: int
    e2e_s: float  # open-loop at 200 events/s, each side
    poll_items: int
    poll_diff_every_s: float
    poll_diff_polls: int
    poll_incremental_polls: int
    scale_sources: int
    scale_every_s: float
    scale_window_s: float
    idle_sources: int
    idle_every_s: float
    idle_window_s: float
    admin_events: int  # events stored for the admin pages' figure

    @classmethod
    def quick_run(cls) -> Settings:
        return cls(
            quick=True,
            ingest_s=2.5,
            ingest_concurrency=64,
            rate_s=2.5,
            delivery_events=2000,
            e2e_s=4.0,
            poll_items=100_000,
            poll_diff_every_s=3.0,
            poll_diff_polls=2,
            poll_incremental_polls=10,
            # Half the sources at half the interval: the same 100 polls/s in a shorter window.
            scale_sources=500,
            scale_every_s=5.0,
            scale_window_s=12.0,
            idle_sources=100,
            idle_every_s=5.0,
            idle_window_s=10.0,
            admin_events=100_000,
        )

    @classmethod
    def full_run(cls) -> Settings:
        return cls(
            quick=False,
            ingest_s=10.0,
            ingest_concurrency=64,
            rate_s=10.0,
            delivery_events=10_000,
            e2e_s=15.0,
            poll_items=100_000,
            poll_diff_every_s=4.0,
            poll_diff_polls=4,
            poll_incremental_polls=20,
            scale_sources=1000,
            scale_every_s=10.0,
            scale_window_s=35.0,
            idle_sources=100,
            idle_every_s=5.0,
            idle_window_s=30.0,
            admin_events=1_000_000,
        )


@dataclass
class Context:
    """A figure's settings and its own scratch folder (under the run's temporary folder)."""

    settings: Settings
    root: Path

    def workdir(self, name: str) -> Path:
        """A fresh folder for one figure's files (configs, databases, logs)."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def require_engine(package: str, what: str) -> None:
    """Raise NotAvailable when `bridge.<package>` is not in this tree yet."""
    if importlib.util.find_spec(f"bridge.{package}") is None:
        raise NotAvailable(f"{what} (bridge/{package}/) not in this tree yet")

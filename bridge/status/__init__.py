"""The bridge's state at a glance: sources and targets, as `bridge status` shows them."""

from __future__ import annotations

from bridge.status.summary import SourceSummary, Summary, TargetSummary, collect

__all__ = ["SourceSummary", "Summary", "TargetSummary", "collect"]

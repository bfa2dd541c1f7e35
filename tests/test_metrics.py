"""The metrics' labels: every one bounded by the config or by the code, none by request data."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from bridge import metrics

# Names from the config (source, target, budget, merge) and words from fixed sets in the code.
BOUNDED_LABELS = {
    "source", "target", "budget", "merge",
    "origin", "outcome", "reason", "result", "path", "first",
}  # fmt: skip


def test_every_metric_has_only_bounded_labels() -> None:
    found = [m for m in vars(metrics).values() if isinstance(m, Counter | Gauge | Histogram)]
    assert len(found) >= 15
    for metric in found:
        assert set(metric._labelnames) <= BOUNDED_LABELS, metric._name


def test_events_are_counted_by_source_and_origin_only() -> None:
    assert metrics.EVENTS._labelnames == ("source", "origin")
    assert metrics.EVENTS._name == "bridge_events"

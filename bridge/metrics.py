"""The bridge's Prometheus metrics, defined once; the engines update them, `/metrics` serves them.

Every label value is bounded by the config or by the code: source, target and budget
names, and short words from fixed sets (outcome, origin, reason, result). None comes from request or
upstream data: an event's type is chosen by whoever sends or serves it (20,000 types once
made 20,034 series), so events are counted by source and origin only; `bridge events --type`
and the status page break them down by type. Every metric is listed, with its labels, in
docs/reference/metrics.md, which docs/gen_reference.py writes from this module.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
)  # fmt: skip

POLLS = Counter("bridge_polls", "Polls made, by source and outcome (ok, not_modified, error).",
                ["source", "outcome"])  # fmt: skip
POLL_ERRORS = Counter("bridge_poll_errors", "Failed polls, by source and reason.",
                      ["source", "reason"])  # fmt: skip
POLL_NOT_MODIFIED = Counter("bridge_poll_not_modified", "Polls answered 304 Not Modified.",
                            ["source"])  # fmt: skip
POLL_GAPS = Counter(
    "bridge_poll_gaps",
    "Feed polls that may have missed events (the last one seen not reached, a cut baseline).",
    ["source"],
)
POLL_CURSOR_SKEWED = Counter(
    "bridge_poll_cursor_skewed",
    "Cursor values further in the future than cursor.max_skew: they did not move the watermark.",
    ["source"],
)
POLL_CURSOR_MISSED = Counter(
    "bridge_poll_cursor_missed",
    "Changes a full walk found that the incremental cursor filter had not returned.",
    ["source"],
)
MERGE_SIGHTINGS = Counter(
    "bridge_merge_sightings",
    "Sightings of merged events, by merge, path (push, poll) and whether it came first.",
    ["merge", "path", "first"],
)
# Not "missed by push": a webhook may still bring the change after the poll (the exact count
# of changes push never brought is `only_poll` in `bridge latency` and `bridge status`).
MERGE_POLLED_FIRST = Counter(
    "bridge_merge_polled_first",
    "Merged events that polling recorded before any webhook of them (one may come later).",
    ["merge"],
)
POLL_REQUESTS = Counter("bridge_poll_requests", "HTTP requests made by polls (pages included).",
                        ["source"])  # fmt: skip
POLL_ITEMS_SKIPPED = Counter(
    "bridge_poll_items_skipped",
    "Items of polls' answers left out, by source and reason (no_key, too_long).",
    ["source", "reason"],
)
POLL_ITEMS = Gauge("bridge_poll_items", "Items in the last successful poll.", ["source"])
POLL_PENDING_DELETES = Gauge(
    "bridge_poll_pending_deletes",
    "Keys the last walks lacked, not deleted until a later walk confirms it.",
    ["source"],
)
EVENTS = Counter("bridge_events", "Events stored, by source and origin (poll, push).",
                 ["source", "origin"])  # fmt: skip
INBOUND_ACCEPTED = Counter("bridge_inbound_accepted", "Webhooks accepted (new or duplicate).",
                           ["source", "outcome"])  # fmt: skip
INBOUND_REJECTED = Counter("bridge_inbound_rejected", "Webhooks refused, by source and reason.",
                           ["source", "reason"])  # fmt: skip
DELIVERIES = Counter("bridge_deliveries", "Deliveries finished, by target and outcome.",
                     ["target", "outcome"])  # fmt: skip
ATTEMPTS = Counter("bridge_delivery_attempts", "Delivery attempts, by target and result.",
                   ["target", "result"])  # fmt: skip
FILTER_ERRORS = Counter("bridge_filter_errors", "Target filters that failed on an event (false).",
                        ["target"])  # fmt: skip
BACKLOG = Gauge("bridge_delivery_backlog", "Deliveries waiting (pending or failed).", ["target"])
DEAD = Gauge("bridge_deliveries_dead", "Deliveries dead after their last retry.", ["target"])
CIRCUIT = Gauge("bridge_circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.",
                ["target"])  # fmt: skip
DETECTION_LATENCY = Histogram(
    "bridge_detection_latency_seconds",
    "From the upstream time of a change to when the bridge recorded it.",
    ["source", "origin"],
    buckets=_LATENCY_BUCKETS_S,
)
DELIVERY_LATENCY = Histogram(
    "bridge_delivery_latency_seconds",
    "From when the bridge recorded an event to its first successful delivery.",
    ["target"],
    buckets=_LATENCY_BUCKETS_S,
)
BUDGET_USED = Gauge("bridge_budget_used", "Requests counted in a budget's current window.",
                    ["budget"])  # fmt: skip
BUDGET_LIMIT = Gauge("bridge_budget_limit", "Requests a budget allows per window.", ["budget"])
RELOADS = Counter("bridge_config_reloads", "Config reloads (SIGHUP) by outcome: applied, refused.",
                  ["outcome"])  # fmt: skip

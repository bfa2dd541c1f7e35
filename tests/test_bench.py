"""The benchmark harness's pure parts: percentiles, ratios, goals, lags and results.json.

The benchmarks themselves run only with `make bench`; these keep their arithmetic honest.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from bench.apps import big_items, find_seq, revision
from bench.load import WEBHOOK_SECRET, sign, signed_requests
from bench.run import markdown, replace_marked, table
from bench.stats import (
    Goal,
    Row,
    combine,
    format_number,
    format_spread,
    latency_summary_ms,
    missed_lags_s,
    pair_latencies_s,
    percentile,
    ratio,
    results_document,
    schedule_lags_s,
    unavailable,
)

MACHINE = {"cores": 2, "cpu": "test cpu", "python": "3.11.7", "sqlite": "3.45.0"}


def test_percentile_interpolates_between_ranks() -> None:
    data = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(data, 0) == 1.0
    assert percentile(data, 50) == 3.0
    assert percentile(data, 100) == 5.0
    assert percentile(data, 25) == 2.0
    assert percentile([1.0, 2.0], 50) == 1.5
    assert math.isclose(percentile(range(1, 101), 99), 99.01)


def test_percentile_refuses_nothing_and_bad_pct() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_ratio_needs_a_positive_baseline() -> None:
    assert ratio(5.0, 10.0) == 0.5
    assert ratio(None, 10.0) is None
    assert ratio(5.0, None) is None
    assert ratio(5.0, 0.0) is None
    assert ratio(5.0, -1.0) is None


def test_goals_on_value_and_on_ratio() -> None:
    fast = Goal("value", "<", 20, "ms")
    assert fast.describe() == "< 20 ms"
    assert fast.is_met(19.9, None) is True
    assert fast.is_met(20.0, None) is False
    assert fast.is_met(None, 1.0) is None
    half = Goal("ratio", ">=", 0.5)
    assert half.describe() == ">= 0.5x"
    assert half.is_met(1.0, 0.5) is True
    assert half.is_met(1e9, 0.49) is False


def test_a_row_computes_its_ratio_and_whether_it_met_its_goal() -> None:
    row = Row("ingest", "accepted/s", "req/s", 3000.0, 8000.0, "bare", Goal("ratio", ">=", 0.5))
    assert row.ratio == 0.375
    assert row.met is False
    assert Row("idle cost", "cpu", "% core", 1.0, 0.5).met is None


def test_latency_summary_is_in_milliseconds() -> None:
    summary = latency_summary_ms([0.001] * 99 + [0.1])
    assert summary["p50_ms"] == pytest.approx(1.0)
    assert summary["max_ms"] == pytest.approx(100.0)
    assert summary["count"] == 100
    assert latency_summary_ms([]) == {}


def test_schedule_lags_count_repeats_from_each_sources_first_poll() -> None:
    s = 1_000_000_000
    log = [
        ("a", 0), ("a", 10 * s + 5_000_000), ("a", 20 * s + 1_000_000),
        ("b", 3 * s), ("b", 13 * s - 1_000),  # a hair early: no lag
        ("c", 7 * s),  # polled once: nothing to say
    ]  # fmt: skip
    lags = sorted(schedule_lags_s(log, 10.0))
    assert lags == pytest.approx([0.0, 0.001, 0.005])


def test_a_missed_poll_counts_as_a_whole_interval_late() -> None:
    s = 1_000_000_000
    assert schedule_lags_s([("a", 0), ("a", 20 * s)], 10.0) == pytest.approx([10.0])


def test_repeats_that_never_came_count_as_late_as_the_window_end() -> None:
    s = 1_000_000_000
    log = [("a", 0), ("a", 10 * s), ("b", 5 * s)]
    # a: the repeat due at 20 s never came (end 25 s): at least 5 s late. b: due at 15 s: 10 s.
    assert sorted(missed_lags_s(log, 10.0, end_ns=25 * s)) == pytest.approx([5.0, 10.0])
    # A repeat due less than the grace before the end may still be on its way.
    assert missed_lags_s([("a", 0)], 10.0, end_ns=int(10.5 * s)) == []


def test_pair_latencies_match_by_seq_and_count_the_missing() -> None:
    sent = {0: 1_000, 1: 2_000, 2: 3_000}
    arrivals = [(1, 2_500), (0, 4_000), (0, 9_000), (7, 1), (-1, 5)]
    latencies, missing = pair_latencies_s(sent, arrivals)
    assert sorted(latencies) == pytest.approx([500e-9, 3000e-9])
    assert missing == 1


def test_results_document_shape() -> None:
    rows = [
        Row("ingest", "accepted/s", "req/s", 3000.0, 8000.0, "bare", Goal("ratio", ">=", 0.5)),
        Row("poll diff", "CPU per poll", "s", 0.5, 0.25, "bare", Goal("value", "<", 1, "s")),
        unavailable("idle cost", "the polling engine is not here", "none set (report only)"),
    ]
    doc = results_document(
        rows, MACHINE, quick=True, started="2026-11-29T09:00:00+00:00", duration_s=12.34
    )
    assert set(doc) == {"schema", "date", "quick", "duration_s", "machine", "figures", "missed"}
    assert doc["machine"]["cores"] == 2
    assert doc["missed"] == ["ingest accepted/s"]
    first, second, third = doc["figures"]
    assert first["ratio"] == 0.375 and first["met"] is False and first["goal"] == ">= 0.5x"
    assert second["ratio"] == 2.0 and second["met"] is True
    assert third["value"] is None and third["note"].startswith("not available: ")
    assert third["goal"] == "none set (report only)"
    # It must survive a trip through JSON unchanged.
    assert json.loads(json.dumps(doc)) == doc
    text = markdown(doc)
    assert (
        "| ingest | accepted/s | 3,000 req/s | - | 8,000 req/s (bare) | 0.38x | - "
        "| >= 0.5x | **no** |" in text
    )
    assert "not available: the polling engine is not here" in text
    assert table(doc["figures"], "t").row_count == 3


def test_format_number_keeps_three_significant_digits() -> None:
    assert format_number(None) == "-"
    assert format_number(0) == "0"
    assert format_number(12345.6, "req/s") == "12,346 req/s"
    assert format_number(12.345, "ms") == "12.3 ms"
    assert format_number(1.2345) == "1.23"
    assert format_number(0.012345) == "0.0123"


def test_the_bench_signs_as_the_reference_library_verifies() -> None:
    # The public test vector of Standard Webhooks.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert (
        sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    (req,) = signed_requests(1)
    assert Webhook(WEBHOOK_SECRET).verify(req.body, req.headers)["seq"] == 0


def test_the_upstream_changes_exactly_one_percent_per_generation() -> None:
    for generation in (0, 1, 57, 99, 100, 101, 250):
        before, after = big_items(1000, generation), big_items(1000, generation + 1)
        changed = [a["id"] for a, b in zip(before, after, strict=True) if a != b]
        assert len(changed) == 10
        assert all(i % 100 == (generation + 1) % 100 for i in changed)
    assert revision(5, 4) == 0 and revision(5, 5) == 1 and revision(5, 105) == 2
    assert revision(0, 99) == 0 and revision(0, 100) == 1


def test_the_receiver_finds_seq_in_a_delivered_cloudevent() -> None:
    assert find_seq({"seq": 3}) == 3
    assert find_seq({"id": "evt_1", "data": {"type": "x", "seq": 7}}) == 7
    assert find_seq({"data": {"object": {"seq": 9}}}) == 9
    assert find_seq({"data": {"seq": "7"}}) is None
    assert find_seq([1, 2]) is None


def test_the_readme_table_is_replaced_between_its_markers() -> None:
    text = "intro\n<!-- bench:start -->\nold table\n<!-- bench:end -->\noutro\n"
    assert replace_marked(text, "| new |") == (
        "intro\n<!-- bench:start -->\n| new |\n<!-- bench:end -->\noutro\n"
    )
    with pytest.raises(SystemExit):
        replace_marked("no markers", "| new |")


def test_runs_combine_into_medians_with_their_spread() -> None:
    goal = Goal("ratio", ">=", 0.7)
    runs = [
        [Row("ingest", "accepted/s", "req/s", v, b, "bare", goal)]
        for v, b in ((100.0, 200.0), (300.0, 400.0), (150.0, 200.0))
    ]
    (row,) = combine(runs)
    assert row.value == 150.0 and row.baseline == 200.0
    assert row.ratio == 0.75  # the median of 0.5, 0.75 and 0.75
    assert row.met is True
    doc = row.to_json()
    assert doc["runs"] == 3
    assert (doc["value_min"], doc["value_max"]) == (100.0, 300.0)
    assert (doc["ratio_min"], doc["ratio_max"]) == (0.5, 0.75)


def test_one_run_has_no_spread() -> None:
    (row,) = combine([[Row("e2e", "p99", "ms", 5.0, 1.0)]])
    assert row.runs == 1 and row.ratio == 5.0
    assert format_spread(row.values) == "-"


def test_the_admin_pages_database_is_built_at_the_daemons_schema(tmp_path: Path) -> None:
    # The figure writes its million events straight into SQLite: it must follow migrations.
    from bench.figures.admin_pages import build
    from bridge.store.sqlite import SQLiteStore

    build(tmp_path / "bridge.db", 50)
    store = SQLiteStore(tmp_path / "bridge.db")
    store.open()
    try:
        assert asyncio.run(store.count_events()) == 50
    finally:
        store.close()


def _goal_doc() -> dict:
    """A results document of two runs with the ingest and peer rows issue 29's goals read."""

    def runs(figure: str, metric: str, unit: str, values: list[float], base: float) -> Row:
        rows = [[Row(figure, metric, unit, v, base, "bare")] for v in values]
        return combine(rows)[0]

    rows = [
        runs("ingest", "accepted/s (64 in flight)", "req/s", [2000, 2600], 3000),
        runs("ingest", "CPU per accepted webhook (64 in flight)", "µs", [140, 170], 60),
        runs("ingest vs peer", "GitHub-signed accepted/s", "req/s", [4000, 4400], 3000),
        runs("ingest vs peer", "CPU per accepted webhook", "µs", [150, 160], 120),
        unavailable("delivery", "not in this tree"),
    ]
    return results_document(rows, MACHINE, quick=False, started="2026-12-06T20:00", duration_s=1)


def test_the_goals_table_holds_each_goal_by_the_median_of_the_runs() -> None:
    from bench.goals import goal_lines

    lines = {line["goal"]: line for line in goal_lines(_goal_doc()["figures"])}
    peer = lines["ingest vs Debian's webhook (GitHub-signed; durable vs nowhere)"]
    assert peer["median"] == pytest.approx(1.4) and peer["held"] is True
    assert (peer["min"], peer["max"]) == (
        pytest.approx(1.333, abs=1e-3),
        pytest.approx(1.467, abs=1e-3),
    )
    assert peer["cpu"]["median"] == 155 and peer["cpu"]["baseline"] == 120
    bare = lines["ingest vs bare Starlette (Standard Webhooks)"]
    assert bare["median"] == pytest.approx(0.7667, abs=1e-3) and bare["held"] is True
    cpu = lines["CPU per accepted webhook"]
    assert cpu["median"] == 155 and cpu["held"] is False  # 155 > 150, though one run was 140
    delivery = lines["delivery vs the bare aiohttp loop"]
    assert delivery["held"] is None and "not in this tree" in delivery["note"]


def test_the_goals_table_leads_the_markdown_with_each_goal_held_or_not() -> None:
    text = markdown(_goal_doc())
    goals = text.index("| goal (issue 29) |")
    assert goals < text.index("| figure | metric |")
    assert (
        "| CPU per accepted webhook | <= 150 µs | 155 µs | 140-170 µs | - | **not held** |" in text
    )
    assert "| 1.40x | 1.33x-1.47x | 155 µs/req (150-160; bare 120) | held |" in text

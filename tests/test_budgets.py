"""The shared request budgets' decisions, on a fake clock (no scheduler, no sockets)."""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from dataclasses import dataclass

import pytest

from bridge.budgets import Budget, Budgets


@dataclass(frozen=True)
class Limit:
    requests: int
    per_s: float


def max_in_window(times: list[float], per_s: float) -> int:
    """The most requests seen in any half-open window [t, t + per_s)."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, at in enumerate(times):
        while times[lo] <= at - per_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def simulate(
    budget: Budget,
    every_s: dict[str, float],
    pages: dict[str, int],
    duration_s: float,
    poll_s: float = 0.01,
) -> list[tuple[float, str]]:
    """Sources ticking at their `every`, asking the budget first; returns (request time, source)."""
    sent: list[tuple[float, str]] = []
    queue = [(0.001 * i, name) for i, name in enumerate(every_s)]
    heapq.heapify(queue)
    for _ in range(100_000):  # bounded
        if not queue:
            break
        now, name = heapq.heappop(queue)
        if now > duration_s:
            break
        wait = budget.reserve(name, now)
        if wait > 0:
            heapq.heappush(queue, (now + wait, name))
            continue
        for page in range(pages[name]):
            sent.append((now + page * poll_s / pages[name], name))
        budget.settle(name, now + poll_s, pages[name])
        heapq.heappush(queue, (now + poll_s + every_s[name], name))
    return sent


def test_a_budget_with_room_lets_a_poll_pass_and_counts_it() -> None:
    budget = Budget(limit=3, per_s=10.0)
    assert budget.reserve("a", 0.0) == 0.0
    assert budget.used(0.0) == 1  # reserved while in flight
    budget.settle("a", 0.5, 1)
    assert budget.used(0.5) == 1
    assert budget.used(10.5) == 0  # the window slid past it


def test_a_full_budget_says_how_long_to_wait() -> None:
    budget = Budget(limit=2, per_s=10.0)
    for at in (0.0, 1.0):
        assert budget.reserve("a", at) == 0.0
        budget.settle("a", at, 1)
    assert budget.reserve("a", 2.0) == pytest.approx(8.0)  # when the first request leaves
    assert budget.reserve("a", 10.0) == 0.0


def test_three_fast_sources_never_exceed_the_budget_and_all_get_polled() -> None:
    budget = Budget(limit=10, per_s=5.0)
    every = {"a": 0.1, "b": 0.1, "c": 0.1}
    sent = simulate(budget, every, {"a": 1, "b": 1, "c": 1}, duration_s=60.0)
    assert max_in_window([at for at, _ in sent], 5.0) <= 10
    by_source = Counter(name for _, name in sent)
    assert len(sent) >= 100  # about 10 per 5 s for 60 s: the budget is used, not wasted
    assert max(by_source.values()) - min(by_source.values()) <= 2  # fair: each its turn


def test_a_slow_source_is_not_starved_by_fast_ones() -> None:
    budget = Budget(limit=5, per_s=2.0)
    sent = simulate(budget, {"fast1": 0.01, "fast2": 0.01, "slow": 1.0}, dict.fromkeys(
        ("fast1", "fast2", "slow"), 1), duration_s=30.0)  # fmt: skip
    assert max_in_window([at for at, _ in sent], 2.0) <= 5
    assert Counter(name for _, name in sent)["slow"] >= 10


def test_multi_page_polls_reserve_what_they_cost_last_time() -> None:
    budget = Budget(limit=10, per_s=5.0)
    sent = simulate(budget, {"a": 0.1, "b": 0.1}, {"a": 4, "b": 1}, duration_s=40.0)
    # The first poll of `a` reserves one request but makes four; from then on it reserves four.
    assert max_in_window([at for at, _ in sent if at > 5.1], 5.0) <= 10
    assert budget.need("a") == 4


def test_polls_waiting_on_a_budget_are_spread() -> None:
    budget = Budget(limit=4, per_s=4.0)
    for name in "abcd":
        assert budget.reserve(name, 0.0) == 0.0
        budget.settle(name, 0.0, 1)
    waits = [budget.reserve(name, 0.1) for name in "abcd"]
    assert waits == sorted(waits)
    assert all(later - earlier >= 1.0 - 1e-9 for earlier, later in itertools.pairwise(waits))


def test_a_failed_poll_is_debited_as_reserved() -> None:
    budget = Budget(limit=5, per_s=5.0)
    budget.reserve("a", 0.0)
    budget.settle("a", 1.0, None)
    assert budget.used(1.0) == 1


def test_the_delay_is_said_once_until_a_whole_window_passes_without_one() -> None:
    budget = Budget(limit=1, per_s=5.0)
    budget.reserve("a", 0.0)
    budget.settle("a", 0.0, 1)
    assert budget.reserve("a", 1.0) > 0
    assert budget.note_delay() is True
    assert budget.note_delay() is False
    assert budget.reserve("a", 5.0) == 0.0
    assert budget.note_pass(5.0) is False  # delayed 4 s ago: not yet a window without delay
    budget.settle("a", 5.0, 1)
    assert budget.reserve("a", 10.0) == 0.0
    assert budget.note_pass(10.0) is True
    assert budget.use("gh", 10.0).delaying is False


def test_a_forgotten_source_leaves_the_queue() -> None:
    budget = Budget(limit=1, per_s=5.0)
    budget.reserve("a", 0.0)
    budget.settle("a", 0.0, 1)
    assert budget.reserve("b", 1.0) > 0
    budget.forget("b")
    assert budget.waiters == {}


def test_reload_keeps_the_window_of_a_budget_still_configured() -> None:
    clock = [0.0]
    budgets = Budgets(clock=lambda: clock[0])
    budgets.apply({"gh": Limit(10, 60.0), "old": Limit(1, 1.0)})
    gh = budgets.get("gh")
    assert gh is not None
    for _ in range(4):
        gh.reserve("a", 0.0)
        gh.settle("a", 0.0, 1)
    budgets.apply({"gh": Limit(10, 60.0), "new": Limit(5, 1.0)})
    assert budgets.get("gh") is gh
    assert budgets.get("old") is None
    assert [(u.name, u.used, u.limit) for u in budgets.uses()] == [("gh", 4, 10), ("new", 0, 5)]
    budgets.apply({"gh": Limit(3, 60.0)})  # a lower limit applies to what was counted
    assert budgets.get("gh") is gh
    assert gh.reserve("b", 1.0) > 0


def test_the_status_lists_every_budget_with_its_sources_and_the_use_reported() -> None:
    from bridge.config import parse_config
    from bridge.status.summary import budget_summaries, budget_use_text, per_text

    config = parse_config(
        """
budgets:
  gh: {requests: 5000, per: 1h}
  idle: {requests: 10, per: 5s}
sources:
  issues: {poll: {url: "http://127.0.0.1:9/i", every: 1m, id: id, budget: gh}}
  pulls: {poll: {url: "http://127.0.0.1:9/p", every: 1m, id: id, budget: gh}}
  other: {poll: {url: "http://127.0.0.1:9/o", every: 1m, id: id}}
"""
    )
    budgets = Budgets(clock=lambda: 0.0)
    budgets.apply(config.budgets)
    gh = budgets.get("gh")
    assert gh is not None
    gh.reserve("issues", 0.0)
    gh.settle("issues", 0.0, 3)
    summaries = budget_summaries(config, [u for u in budgets.uses() if u.name == "gh"])
    assert [(b.name, b.sources, b.used) for b in summaries] == [
        ("gh", ["issues", "pulls"], 3),
        ("idle", [], None),
    ]
    assert budget_use_text(summaries[0]) == "3 / 5000 per 1h"
    assert budget_use_text(summaries[1]) == "- / 10 per 5s"
    assert [per_text(s) for s in (0.25, 90.0, 1.5, 86400.0)] == ["250ms", "90s", "1.5s", "1d"]

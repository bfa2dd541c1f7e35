"""The real daemon against a local upstream's rate limits, and sources sharing a budget.

Request times are those the upstream recorded; every wait polls its condition with a deadline.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.helpers import DaemonProcess, run_cli, wait_until
from tests.scripted_server import Reply, Script, Seen, scripted_server

pytestmark = pytest.mark.slow

# Scheduling jitter allowed on a wait the upstream asked for (the wait itself is exact).
TOLERANCE_S = 0.1


@pytest.fixture
def upstream() -> Iterator[tuple[Script, str]]:
    with scripted_server() as served:
        yield served


def times(script: Script, path: str | None = None) -> list[float]:
    with script.lock:
        return [s.at for s in script.seen if path is None or s.path == path]


def source(name: str, url: str, every: str, extra: str = "") -> str:
    return f"""
  {name}:
    poll:
      url: {url}
      every: {every}
      id: id{extra}"""


def test_nothing_remaining_holds_the_next_poll_until_the_reset(
    daemon: Callable[..., DaemonProcess], upstream: tuple[Script, str]
) -> None:
    script, base = upstream
    reset_at: list[int] = []

    def answer(seen: Seen) -> Reply:
        if not reset_at:  # the first answer uses the quota up
            reset_at.append(math.ceil(time.time()) + 3)
            headers = [("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", str(reset_at[0]))]
        else:
            headers = [("X-RateLimit-Remaining", "4999")]
        return Reply(body=[{"id": 1}], headers=[("X-RateLimit-Limit", "5000"), *headers])

    script.route("/items", answer)
    bridge = daemon("database: bridge.db\nsources:" + source("items", base + "/items", "250ms"))
    wait_until(lambda: len(times(script)) >= 3, timeout_s=20)
    _first, second, third = times(script)[:3]
    assert second >= reset_at[0], f"polled {reset_at[0] - second:.3f} s before the reset"
    assert third - second < 2.0  # back to every 250ms once the quota is back
    assert "the upstream allows no poll" in bridge.log()
    assert "X-RateLimit-Remaining: 0" in bridge.log()


def test_x_poll_interval_is_the_least_gap_between_polls(
    daemon: Callable[..., DaemonProcess], upstream: tuple[Script, str]
) -> None:
    script, base = upstream
    script.route("/events", Reply(body=[{"id": 1}], headers=[("X-Poll-Interval", "3")]))
    bridge = daemon("database: bridge.db\nsources:" + source("events", base + "/events", "250ms"))
    wait_until(lambda: len(times(script)) >= 4, timeout_s=30)
    seen = times(script)
    gaps = [later - earlier for earlier, later in itertools.pairwise(seen)]
    assert min(gaps) >= 3.0 - TOLERANCE_S, gaps
    assert bridge.log().count("the upstream allows no poll") == 1  # said once, not per poll


def max_in_window(seen: list[float], per_s: float) -> int:
    """The most requests in any window [t, t + per_s) starting at a recorded request."""
    seen = sorted(seen)
    return max(sum(1 for t in seen if start <= t < start + per_s) for start in seen)


def test_sources_sharing_a_budget_never_exceed_it_and_all_get_polled(
    daemon: Callable[..., DaemonProcess], upstream: tuple[Script, str]
) -> None:
    script, base = upstream
    for name in "abc":
        script.route(f"/{name}", Reply(body=[{"id": 1}]))
    sources = "".join(
        source(name, f"{base}/{name}", "100ms", "\n      budget: gh") for name in "abc"
    )
    config = f"database: bridge.db\nbudgets:\n  gh: {{requests: 10, per: 5s}}\nsources:{sources}"
    bridge = daemon(config)
    wait_until(lambda: len(times(script)) > 0 and times(script)[-1] - times(script)[0] >= 12.0,
               timeout_s=40)  # fmt: skip
    seen = times(script)
    print(bridge.log())
    assert max_in_window(seen, 5.0) <= 10
    assert len(seen) >= 20  # the budget is used, not wasted
    for name in "abc":
        assert len(times(script, f"/{name}")) >= 3, name
    log = bridge.log()
    assert log.count("budget gh: 10 requests per 5 s used up") == 1, log

    metrics = httpx.get(bridge.url + "/metrics", timeout=5).text
    assert 'bridge_budget_limit{budget="gh"} 10.0' in metrics
    used = next(line for line in metrics.splitlines() if line.startswith("bridge_budget_used{"))
    assert 0 < float(used.split()[-1]) <= 10

    status = httpx.get(bridge.url + "/api/status", timeout=5).json()
    (budget,) = status["budgets"]
    assert (budget["name"], budget["limit"], budget["per_s"]) == ("gh", 10, 5.0)
    assert budget["sources"] == ["a", "b", "c"]

    result = run_cli("status", "-c", str(bridge.config_path))
    assert result.returncode == 0, result.stderr
    assert "gh" in result.stdout and "/ 10 per 5s" in result.stdout, result.stdout

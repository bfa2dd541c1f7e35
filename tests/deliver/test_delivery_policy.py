"""The pure retry policy and circuit breaker: outcomes, schedule, jitter, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import DEFAULT_RETRY_S, CircuitConfig
from bridge.deliver.policy import (
    Circuit,
    decide,
    is_success,
    jittered,
    parse_retry_after,
    retry_delay_s,
)

NOW_MS = 1_800_000_000_000
SCHEDULE = [5.0, 300.0, 1800.0]


def mid() -> float:
    return 0.5  # no jitter


@pytest.mark.parametrize("code", [200, 201, 202, 204, 299])
def test_any_2xx_is_delivered(code: int) -> None:
    d = decide(code, attempts=1, retry_s=SCHEDULE, now_ms=NOW_MS, rand=mid)
    assert d.status == "delivered" and not d.is_failure and not d.disables_target


@pytest.mark.parametrize("code", [None, 301, 302, 307, 308, 400, 401, 404, 500, 501])
def test_other_answers_retry_on_the_schedule(code: int | None) -> None:
    d = decide(code, attempts=2, retry_s=SCHEDULE, now_ms=NOW_MS, rand=mid)
    assert d.status == "failed" and d.is_failure
    assert d.next_ms == NOW_MS + 300_000
    assert not is_success(code)


def test_the_schedule_then_dead() -> None:
    delays = [retry_delay_s(n, DEFAULT_RETRY_S, 0.5) for n in range(1, 9)]
    assert delays == [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0, None]
    d = decide(500, attempts=len(SCHEDULE) + 1, retry_s=SCHEDULE, now_ms=NOW_MS, rand=mid)
    assert d.status == "dead"
    assert decide(500, attempts=1, retry_s=[], now_ms=NOW_MS, rand=mid).status == "dead"


def test_jitter_is_within_twenty_percent() -> None:
    assert jittered(100.0, 0.0) == pytest.approx(80.0)
    assert jittered(100.0, 0.999999) == pytest.approx(120.0, rel=1e-5)
    seen = {decide(500, attempts=1, retry_s=[10.0], now_ms=NOW_MS).next_ms for _ in range(50)}
    assert len(seen) > 1
    assert all(NOW_MS + 8_000 <= ms <= NOW_MS + 12_000 for ms in seen)


def test_410_disables_the_target_and_keeps_the_delivery_due() -> None:
    d = decide(410, attempts=8, retry_s=SCHEDULE, now_ms=NOW_MS, rand=mid)
    assert d.disables_target and d.status == "failed" and d.next_ms == NOW_MS


@pytest.mark.parametrize("code", [429, 502, 503, 504])
def test_retry_after_seconds_is_honoured_on_slow_down_answers(code: int) -> None:
    d = decide(code, attempts=1, retry_s=SCHEDULE, now_ms=NOW_MS, retry_after="120", rand=mid)
    assert d.next_ms == NOW_MS + 120_000
    # Never sooner than the schedule either.
    d = decide(code, attempts=2, retry_s=SCHEDULE, now_ms=NOW_MS, retry_after="1", rand=mid)
    assert d.next_ms == NOW_MS + 300_000


def test_retry_after_is_ignored_on_other_answers() -> None:
    d = decide(500, attempts=1, retry_s=SCHEDULE, now_ms=NOW_MS, retry_after="120", rand=mid)
    assert d.next_ms == NOW_MS + 5_000


def test_retry_after_http_date() -> None:
    when = datetime.fromtimestamp(NOW_MS / 1000 + 90, tz=UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True), NOW_MS) == pytest.approx(90)
    past = datetime.fromtimestamp(NOW_MS / 1000 - 90, tz=UTC)
    assert parse_retry_after(format_datetime(past, usegmt=True), NOW_MS) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5.2", "Wed, 99 Foo 2026"])
def test_unusable_retry_after_is_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW_MS) is None


def test_huge_retry_after_is_capped_at_a_day() -> None:
    assert parse_retry_after("999999999", NOW_MS) == 86400.0


CFG = CircuitConfig(failures=3, cooldown=10, max_cooldown=35)


def fail(c: Circuit, times: int, at_ms: int = NOW_MS) -> Circuit:
    for _ in range(times):
        c = c.on_failure(at_ms, CFG)
    return c


def test_circuit_opens_after_n_consecutive_failures() -> None:
    c = fail(Circuit(), 2)
    assert c.state == "closed" and c.failures == 2 and c.admits(NOW_MS) == "all"
    c = fail(c, 1)
    assert c.state == "open" and c.open_until_ms == NOW_MS + 10_000 and c.cooldown_s == 10
    assert c.admits(NOW_MS + 9_999) == "none"
    assert c.admits(NOW_MS + 10_000) == "probe"


def test_a_success_resets_the_count() -> None:
    c = fail(Circuit(), 2).on_success()
    assert c == Circuit()
    assert fail(c, 2).state == "closed"


def test_failed_probes_grow_the_cooldown_up_to_the_maximum() -> None:
    c = fail(Circuit(), 3)
    cooldowns = []
    for _ in range(4):
        at = c.open_until_ms or 0
        c = c.probing()
        assert c.state == "half_open" and c.admits(at) == "probe"
        c = c.on_failure(at, CFG)
        assert c.state == "open" and c.open_until_ms == at + round((c.cooldown_s or 0) * 1000)
        cooldowns.append(c.cooldown_s)
    assert cooldowns == [20, 35, 35, 35]


def test_a_successful_probe_closes_the_circuit() -> None:
    c = fail(Circuit(), 3).probing().on_success()
    assert c.state == "closed" and c.failures == 0 and c.admits(NOW_MS) == "all"


def test_late_failures_while_open_do_not_extend_the_cooldown() -> None:
    c = fail(Circuit(), 3)
    later = c.on_failure(NOW_MS + 5_000, CFG)
    assert later.open_until_ms == c.open_until_ms and later.failures == 4


# -- a Retry-After that cannot be read, or asks for too long --------------------------------


@pytest.mark.parametrize("value", ["²", "\u00c2\u00b2", "٣", "1e3", "-1", "soon", "Fri, 99 Foo"])
def test_an_unreadable_retry_after_is_ignored_and_said(value: str) -> None:
    assert parse_retry_after(value, NOW_MS) is None
    d = decide(429, attempts=1, retry_s=SCHEDULE, now_ms=NOW_MS, retry_after=value, rand=mid)
    assert d.status == "failed" and d.next_ms == NOW_MS + 5000  # the schedule's delay
    assert d.note == "its Retry-After cannot be read: ignored"


@pytest.mark.parametrize("value", ["9" * 400, "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_retry_after_beyond_max_wait_waits_max_wait(value: str) -> None:
    d = decide(
        503, attempts=1, retry_s=SCHEDULE, now_ms=NOW_MS, retry_after=value, max_wait_s=3600,
        rand=mid,
    )  # fmt: skip
    assert d.next_ms == NOW_MS + 3_600_000
    assert d.note == "its Retry-After asks for more than limits.max_wait: waiting 3600 s"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.integers(0, 10**450).map(str)), st.sampled_from([429, 503, 500]))
def test_no_retry_after_value_raises(value: str, code: int) -> None:
    d = decide(code, attempts=1, retry_s=SCHEDULE, now_ms=NOW_MS, retry_after=value, rand=mid)
    assert NOW_MS <= d.next_ms <= NOW_MS + 86_400_000

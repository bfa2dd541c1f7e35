"""The pure reading of rate-limit headers: when the next poll may go (no sockets)."""

from __future__ import annotations

import email.utils

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.poll.fetch import retry_after_s
from bridge.poll.limits import DEFAULT_MAX_WAIT_S, MAX_WAIT_S, NO_LIMITS, Limits, read_limits

NOW = 1_700_000_000.0


def limits(status: int = 200, **headers: str) -> Limits:
    named = httpx.Headers({k.replace("_", "-"): v for k, v in headers.items()})
    return read_limits(named, status, NOW)


def test_no_headers_hold_nothing() -> None:
    seen = limits()
    assert seen == NO_LIMITS
    assert seen.wait_s(NOW) == 0.0


def test_github_remaining_zero_waits_until_the_unix_reset() -> None:
    seen = limits(
        X_RateLimit_Limit="5000", X_RateLimit_Remaining="0", X_RateLimit_Reset=f"{NOW + 42:.0f}"
    )
    assert seen.wait_s(NOW) == pytest.approx(42)
    assert (seen.remaining, seen.limit) == (0, 5000)
    assert seen.why == "X-RateLimit-Remaining: 0"


def test_github_remaining_left_holds_nothing_but_is_reported() -> None:
    seen = limits(X_RateLimit_Remaining="17", X_RateLimit_Reset=f"{NOW + 42:.0f}")
    assert seen.not_before_s is None
    assert seen.remaining == 17


def test_gitlab_ratelimit_reset_is_a_unix_time() -> None:
    seen = limits(RateLimit_Remaining="0", RateLimit_Reset=f"{NOW + 7:.0f}", RateLimit_Limit="600")
    assert seen.wait_s(NOW) == pytest.approx(7)
    assert seen.limit == 600


def test_older_ietf_draft_reset_is_a_delay_in_seconds() -> None:
    assert limits(RateLimit_Remaining="0", RateLimit_Reset="30").wait_s(NOW) == pytest.approx(30)


def test_a_reset_in_the_past_holds_nothing() -> None:
    seen = limits(X_RateLimit_Remaining="0", X_RateLimit_Reset=f"{NOW - 5:.0f}")
    assert seen.not_before_s is None


def test_current_ietf_draft_list_with_policy() -> None:
    seen = limits(RateLimit='"default";r=0;t=30', RateLimit_Policy='"default";q=100;w=60')
    assert seen.wait_s(NOW) == pytest.approx(30)
    assert (seen.remaining, seen.limit) == (0, 100)
    assert seen.why == "RateLimit: 0"


def test_current_ietf_draft_with_quota_left_holds_nothing() -> None:
    seen = limits(RateLimit='"default";r=50;t=30')
    assert seen.not_before_s is None
    assert seen.remaining == 50


def test_several_ietf_policies_the_exhausted_one_holds_the_poll() -> None:
    seen = limits(RateLimit='"burst";r=5;t=1, "day";r=0;t=3600')
    assert seen.wait_s(NOW) == pytest.approx(3600)
    assert seen.remaining == 0


def test_ietf_draft_07_dictionary() -> None:
    seen = limits(RateLimit="limit=10, remaining=0, reset=12")
    assert seen.wait_s(NOW) == pytest.approx(12)
    assert (seen.remaining, seen.limit) == (0, 10)


def test_x_poll_interval_is_the_least_delay() -> None:
    seen = limits(X_Poll_Interval="60")
    assert seen.wait_s(NOW) == pytest.approx(60)
    assert seen.why == "X-Poll-Interval: 60"


def test_retry_after_counts_on_errors_only() -> None:
    assert limits(403, Retry_After="9").wait_s(NOW) == pytest.approx(9)
    assert limits(200, Retry_After="9").not_before_s is None
    date = email.utils.formatdate(NOW + 20, usegmt=True)
    assert limits(429, Retry_After=date).wait_s(NOW) == pytest.approx(20)


def test_the_longest_wait_wins() -> None:
    seen = limits(
        X_Poll_Interval="3", X_RateLimit_Remaining="0", X_RateLimit_Reset=f"{NOW + 50:.0f}"
    )
    assert seen.wait_s(NOW) == pytest.approx(50)


@pytest.mark.parametrize(
    "headers",
    [
        {"X_RateLimit_Remaining": "zero", "X_RateLimit_Reset": "soon"},
        {"X_RateLimit_Remaining": "0", "X_RateLimit_Reset": "-5"},
        {"X_Poll_Interval": "1e9999"},
        {"RateLimit": '"a;r=0'},
        {"RateLimit": ";;;,,,=="},
        {"Retry_After": "Mon, 99 Foo 20"},
    ],
)
def test_unreadable_values_are_ignored(headers: dict[str, str]) -> None:
    seen = limits(429, **headers)
    assert seen.not_before_s is None or seen.wait_s(NOW) <= MAX_WAIT_S


def test_a_wait_is_at_most_a_day() -> None:
    assert limits(X_Poll_Interval="9999999").wait_s(NOW) == MAX_WAIT_S


def test_then_keeps_the_later_time_and_the_latest_remaining() -> None:
    first = Limits(NOW + 10, "X-Poll-Interval: 10", remaining=5, limit=10)
    second = Limits(None, None, remaining=4, limit=10)
    merged = first.then(second)
    assert merged.not_before_s == NOW + 10
    assert merged.remaining == 4
    assert second.then(first).not_before_s == NOW + 10


@pytest.mark.anyio
async def test_fetch_reads_the_limits_of_every_answer_and_a_failure_carries_them() -> None:
    from bridge.config import PollConfig
    from bridge.errors import FetchError
    from bridge.poll.fetch import Fetched, fetch

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ok":
            return httpx.Response(200, json=[], headers={"X-Poll-Interval": "60"})
        return httpx.Response(403, json={}, headers={"X-RateLimit-Remaining": "0",
                              "X-RateLimit-Reset": "4102444800"})  # fmt: skip

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        ok = PollConfig.model_validate({"url": "http://127.0.0.1:9/ok", "every": 1, "id": "id"})
        fetched = await fetch(client, ok)
        assert fetched.limits.why == "X-Poll-Interval: 60"
        denied = ok.model_copy(update={"url": "http://127.0.0.1:9/denied"})
        out = Fetched()
        with pytest.raises(FetchError) as caught:
            await fetch(client, denied, out=out)
    assert caught.value.not_before_s == out.limits.not_before_s
    assert out.limits.remaining == 0 and out.limits.why == "X-RateLimit-Remaining: 0"


# -- no value of any rate-limit header raises (hypothesis) ----------------------------------

_NAMES = (
    "x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-limit", "ratelimit-remaining",
    "ratelimit-reset", "ratelimit-limit", "ratelimit", "ratelimit-policy", "retry-after",
    "x-poll-interval",
)  # fmt: skip
_DIGITS = st.integers(min_value=0, max_value=10**450).map(str)
_VALUES = st.one_of(
    st.text(),
    st.text(alphabet='0123456789.;,="rtqw -²٣\t'),
    _DIGITS,
    st.builds(lambda n, r, t: f'"{n}";r={r};t={t}', st.text(max_size=4), _DIGITS, _DIGITS),
    st.builds(lambda a, b: f"limit={a}, remaining={b}, reset={a}", _DIGITS, _DIGITS),
    st.sampled_from(["\u00c2\u00b2", "²", "Fri, 31 Dec 9999 23:59:59 GMT", "1e400", "nan"]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.dictionaries(st.sampled_from(_NAMES), _VALUES),
    st.integers(min_value=100, max_value=599),
)
def test_no_value_of_any_rate_limit_header_raises(headers: dict[str, str], status: int) -> None:
    seen = read_limits(headers, status, NOW)
    assert 0.0 <= seen.wait_s(NOW, DEFAULT_MAX_WAIT_S) <= DEFAULT_MAX_WAIT_S
    assert seen.is_clamped(NOW, DEFAULT_MAX_WAIT_S) in (True, False)
    delay = retry_after_s(headers.get("retry-after"), NOW)
    assert delay is None or delay >= 0.0


@pytest.mark.parametrize("value", ["²", "\u00c2\u00b2", "٣", "1e400", "-5", "soon", ""])
def test_a_retry_after_that_is_not_ascii_digits_or_a_date_is_unreadable(value: str) -> None:
    assert retry_after_s(value, NOW) is None
    assert read_limits({"retry-after": value}, 429, NOW).not_before_s is None


def test_a_number_of_400_digits_is_the_largest_wait_not_an_error() -> None:
    seen = limits(429, Retry_After="9" * 400)
    assert seen.wait_s(NOW, 3600.0) == 3600.0 and seen.is_clamped(NOW, 3600.0)
    assert limits(X_RateLimit_Remaining="9" * 400).remaining is not None

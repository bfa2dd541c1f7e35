"""Repeated failures of one kind: printed once, then counted into the next line (pure)."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest

from bridge.repeats import Counted, RepeatLog, Repeats


def test_a_failure_prints_once_and_its_repeats_are_counted_into_the_next_line() -> None:
    repeats = Repeats(every_s=60)
    assert repeats.failed("claim", 0.0) == Counted(0, 0.0)
    assert [repeats.failed("claim", float(t)) for t in range(1, 60)] == [None] * 59
    # Another kind prints on its own.
    assert repeats.failed("beat", 5.0) == Counted(0, 0.0)
    again = repeats.failed("claim", 61.0)
    assert again == Counted(59, 61.0)
    assert again.suffix() == " (and 59 more like it in 61 s)"
    assert Counted(0, 0.0).suffix() == ""


def test_the_end_of_a_run_says_how_long_and_how_many_were_not_printed() -> None:
    repeats = Repeats(every_s=60)
    assert repeats.passed("claim", 1.0) is None  # never failed
    repeats.failed("claim", 10.0)
    assert repeats.passed("claim", 11.0) is None  # every failure was printed
    assert not repeats.is_failing("claim")
    repeats.failed("claim", 20.0)
    repeats.failed("claim", 21.0)
    repeats.failed("claim", 22.5)
    assert repeats.passed("claim", 30.0) == (10.0, 2)
    # Forgotten: the next failure prints again.
    assert repeats.failed("claim", 31.0) == Counted(0, 0.0)


def test_at_a_stop_every_count_not_yet_printed_is_given() -> None:
    repeats = Repeats(every_s=60)
    repeats.failed("a", 0.0)
    repeats.failed("a", 1.0)
    repeats.failed("b", 0.0)
    assert repeats.unprinted(4.0) == [("a", Counted(1, 4.0))]
    assert not repeats.is_failing("a") and not repeats.is_failing("b")


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("bridge.test_repeats")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def test_a_repeat_log_prints_counts_and_loses_none(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = captured
    now = [0.0]
    log = RepeatLog(logger, every_s=60, clock=lambda: now[0])
    for second in range(130):  # one failure a second for 130 s
        now[0] = float(second)
        log.warning("claim", "cannot claim deliveries: %s", f"locked {second}")
    now[0] = 131.5
    log.passed("claim", "deliveries are claimed again")
    lines = out.getvalue().splitlines()
    assert lines == [
        "WARNING cannot claim deliveries: locked 0",
        "WARNING cannot claim deliveries: locked 60 (and 59 more like it in 60 s)",
        "WARNING cannot claim deliveries: locked 120 (and 59 more like it in 60 s)",
        "INFO deliveries are claimed again after 131.5 s of failures (9 more like it not shown)",
    ]
    # Every one of the 130 failures is printed or counted into a printed line.
    printed = sum(line.startswith("WARNING") for line in lines)
    counted = sum(int(n) for n in re.findall(r"\((?:and )?(\d+) more like it", out.getvalue()))
    assert printed + counted == 130


def test_a_repeat_log_says_what_it_counted_at_a_stop(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = captured
    now = [0.0]
    log = RepeatLog(logger, every_s=60, clock=lambda: now[0])
    for second in range(5):
        now[0] = float(second)
        log.warning(("store", "hook"), "source %s: cannot store a webhook", "hook")
    log.warning("beat", "heartbeat not recorded")  # printed; nothing counted
    now[0] = 7.0
    log.flush()
    assert out.getvalue().splitlines() == [
        "WARNING source hook: cannot store a webhook",
        "WARNING heartbeat not recorded",
        "WARNING source hook: cannot store a webhook (and 4 more like it in 7 s)",
    ]
    log.flush()  # said once
    assert len(out.getvalue().splitlines()) == 3

"""What an operator is told of a circuit: the log lines of its changes, a redelivery held by
an open one, what `target reset` and `target enable` closed (pure)."""

from __future__ import annotations

from bridge.deliver import circuit
from bridge.deliver.lines import circuit_line
from bridge.deliver.policy import Circuit
from bridge.events import format_time
from bridge.store.base import TargetReset, TargetState

AT = 1_800_000_000_000
UNTIL = AT + 90_000
T = format_time(UNTIL)
OPEN = TargetState("me", None, None, "open", 5, UNTIL, 90.0)


def test_each_change_of_a_circuit_is_one_line_and_no_change_none() -> None:
    closed, probing = Circuit(), Circuit("half_open", 5, AT, 90.0)
    opened = Circuit("open", 5, UNTIL, 90.0)
    assert (
        circuit_line("me", closed, opened)
        == f"target me: circuit opened until {T} after 5 failures"
    )
    assert circuit_line("me", opened, probing) == "target me: circuit half-open: one probe"
    assert circuit_line("me", probing, Circuit("open", 6, UNTIL, 180.0)) == (
        f"target me: circuit opened until {T} after the probe failed"
    )
    assert circuit_line("me", probing, closed) == "target me: circuit closed"
    assert circuit_line("me", opened, closed, by="reset") == "target me: circuit closed by reset"
    assert circuit_line("me", closed, Circuit(failures=3)) is None
    assert circuit_line("me", opened, Circuit("open", 6, UNTIL, 90.0)) is None


def test_a_redelivery_names_each_open_circuit_with_until_when_and_the_reset() -> None:
    states = {
        "me": OPEN,
        "past": TargetState("past", circuit="open", failures=5, open_until_ms=AT - 1),
        "ok": TargetState("ok"),
    }
    held = circuit.held(states, ["me", "past", "ok", "unknown"], AT)
    assert held == [OPEN]
    assert circuit.held_text(OPEN) == (
        f"target me: circuit open until {T}; 'bridge target reset me' (or the page's"
        ' "Retry now") sends it now'
    )
    assert circuit.held_json(OPEN) == {"target": "me", "state": "open", "until": T}


def test_enable_says_whether_it_closed_a_circuit() -> None:
    assert circuit.enable_text("me", OPEN) == (
        f"target me was enabled already; its circuit was open until {T} and is now closed:"
        " its backlog is sent now"
    )
    disabled = TargetState("me", AT, "answered 410 Gone")
    assert circuit.enable_text("me", disabled) == "target me enabled"
    assert circuit.enable_text("me", TargetState("me")) == "target me was enabled already"


def test_reset_says_what_it_closed_and_what_it_made_due() -> None:
    assert circuit.reset_text("me", TargetReset(OPEN, 2)) == (
        f"target me: its circuit was open until {T} and is now closed: its backlog is sent"
        " now (2 deliveries waiting for a later retry included)"
    )
    half = TargetState("me", circuit="half_open", failures=5)
    assert circuit.reset_text("me", TargetReset(half, 0)) == (
        "target me: its circuit was half-open and is now closed: its backlog is sent now"
    )
    disabled = TargetState("me", AT, "by hand")
    assert circuit.reset_text("me", TargetReset(disabled, 0)) == (
        "target me: its circuit was closed already; the target is disabled: nothing is sent"
        " until 'bridge target enable me'"
    )
    assert circuit.reset_json("me", TargetReset(OPEN, 1)) == {
        "target": "me",
        "circuit": "closed",
        "changed": True,
        "was": {"state": "open", "until": T, "failures": 5},
        "retried": 1,
        "enabled": True,
    }

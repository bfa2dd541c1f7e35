"""What an attempt's outcome tells the operational events (bridge/operational.py): a target
failing, its circuit opening or closing, a 410 disabling it, a delivery gone dead.

Pure translation from the worker's terms (a claim, a decision, the circuit before and after)
to the teller's; the teller decides what is news. A change brought about by delivering an
operational event is told quietly (not at all), so an alert target that is down raises no
alerts about itself or about its alerts.
"""

from __future__ import annotations

from bridge.deliver.policy import Circuit, Decision
from bridge.events import BRIDGE_SOURCE
from bridge.operational import Operational
from bridge.store.base import TargetState
from bridge.store.deliveries import Claim


def tell_attempt(
    teller: Operational,
    target: str,
    claim: Claim,
    decision: Decision,
    circuits: tuple[Circuit, Circuit],
    states: tuple[TargetState, TargetState] | None,
    error: str | None,
    *,
    is_final: bool = False,
) -> None:
    """Tell what one recorded attempt to `target` changed: `circuits` and `states` are its
    circuit and its persisted state before and after the attempt (the states only when it
    disabled the target). A final answer (a
    `transform` that failed) makes the delivery dead without counting against the target."""
    quiet = claim.event.source == BRIDGE_SOURCE
    before, after = circuits
    if decision.status == "dead":
        teller.delivery_dead(target, claim.event, claim.delivery_id, claim.attempts + 1, error)
    if is_final:
        return
    if decision.disables_target:
        assert states is not None, "an attempt that disables its target gives its states"
        was, now = states
        if was.disabled_ms is None and now.disabled_ms is not None:
            teller.target_disabled(target, now.disabled_reason, now.disabled_ms)
        return
    if decision.is_failure:
        teller.delivery_failed(target, error, caused_by_bridge=quiet)
    else:
        teller.delivery_succeeded(target)
    if after.state == "open" and before.state != "open":
        teller.circuit_opened(target, after.open_until_ms, error, caused_by_bridge=quiet)
    elif after.state == "closed" and before.state != "closed":
        teller.circuit_closed(target)

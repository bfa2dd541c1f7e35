"""Targets: health, circuit (and until when it is open), backlog, dead, last attempts; and
the changes `bridge target enable|disable|reset` and the Targets page's buttons make.

    GET  /targets                    as `bridge targets --json`
    GET  /targets/{name}             the same, with why it is disabled and its last attempts
    POST /targets/{name}/enable      enabled, circuit closed
    POST /targets/{name}/disable     its deliveries wait (none is lost)
    POST /targets/{name}/reset       "Retry now": circuit closed, backlog due now
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query

from bridge.api import models
from bridge.api.events import Caller, RuntimeDep
from bridge.api.problems import ApiProblem, responses
from bridge.deliver import circuit
from bridge.events import format_time, now_ms
from bridge.logs import config_secrets
from bridge.masking import mask_url
from bridge.runtime import Runtime
from bridge.status.targets import target_row, target_rows
from bridge.store.base import TargetState

log = logging.getLogger("bridge.api")

router = APIRouter(tags=["targets"])


def _masker(runtime: Runtime) -> Callable[[str], str]:
    secrets = frozenset(config_secrets(runtime.config))
    return lambda url: mask_url(url, secrets)


@router.get("/targets", response_model=models.TargetList)
async def list_targets(runtime: RuntimeDep) -> models.TargetList:
    """Every target of the config (and removed ones that still have deliveries)."""
    store = runtime.store
    states, counts = await store.target_states(), await store.delivery_counts()
    rows = target_rows(runtime.config, states, counts, now_ms(), _masker(runtime))
    return models.TargetList.model_validate({"targets": rows})


@router.get("/targets/{name}", response_model=models.TargetDetail, responses=responses("not-found"))
async def get_target(
    runtime: RuntimeDep,
    name: str,
    attempts: Annotated[
        int, Query(ge=0, le=models.ATTEMPTS_MAX, description="How many last attempts.")
    ] = models.ATTEMPTS_LIMIT,
) -> models.TargetDetail:
    """One target, with why it is disabled and its last attempts, newest first."""
    store = runtime.store
    counts = await store.delivery_counts()
    if name not in runtime.config.targets and name not in counts:
        raise ApiProblem("not-found", f"no target named {name!r}")
    state = (await store.target_states()).get(name) or TargetState(name)
    row = target_row(runtime.config, name, state, counts.get(name, {}), now_ms(), _masker(runtime))
    last = await store.list_target_attempts(name, attempts) if attempts else []
    row["disabled_reason"] = state.disabled_reason if state.disabled_ms is not None else None
    row["last_attempts"] = [
        {
            "event_id": a.event_id,
            "time": format_time(a.at_ms),
            "status": a.status_code,
            "duration_ms": a.duration_ms,
            "error": a.error,
        }
        for a in last
    ]
    return models.TargetDetail.model_validate(row)


def _configured(runtime: Runtime, name: str) -> None:
    if name not in runtime.config.targets:
        raise ApiProblem("not-found", f"no target named {name!r} in the config")


_CHANGES = responses("not-found")


@router.post("/targets/{name}/enable", response_model=models.TargetChange, responses=_CHANGES)
async def enable_target(runtime: RuntimeDep, caller: Caller, name: str) -> models.TargetChange:
    """Enable a target (disabled by a 410 or by hand) and close its circuit."""
    _configured(runtime, name)
    before = await runtime.store.enable_target(name)
    log.info("api: %s enabled target %s: %s", caller.who, name, circuit.enable_detail(before))
    return models.TargetChange.model_validate(
        {
            "target": name,
            "enabled": True,
            "changed": before.disabled_ms is not None,
            "circuit_closed": circuit.closed_circuit(before),
        }
    )


@router.post("/targets/{name}/disable", response_model=models.TargetChange, responses=_CHANGES)
async def disable_target(runtime: RuntimeDep, caller: Caller, name: str) -> models.TargetChange:
    """Disable a target: its deliveries wait (none is lost) until it is enabled."""
    _configured(runtime, name)
    reason = f"disabled through the API by {caller.who}"
    was_enabled = await runtime.store.disable_target(name, reason, now_ms())
    log.info(
        "api: %s disabled target %s (it was %s)",
        caller.who,
        name,
        "enabled" if was_enabled else "disabled already",
    )
    out = {"target": name, "enabled": False, "changed": was_enabled}
    return models.TargetChange.model_validate(out)


@router.post("/targets/{name}/reset", response_model=models.TargetChange, responses=_CHANGES)
async def reset_target(runtime: RuntimeDep, caller: Caller, name: str) -> models.TargetChange:
    """Close a target's circuit and make its waiting deliveries due now ("Retry now")."""
    _configured(runtime, name)
    done = await runtime.store.reset_target(name, now_ms())
    log.info("api: %s reset target %s: %s", caller.who, name, circuit.reset_detail(name, done))
    return models.TargetChange.model_validate(circuit.reset_json(name, done))

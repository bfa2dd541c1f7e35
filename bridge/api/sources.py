"""Sources: the status summary of each (as `bridge status --json` lists it, field for field),
one source with its stored poll state, and a poll now.

    GET  /sources                    every source
    GET  /sources/{name}             status, faults, gaps, budget, the watermark (or whether a
                                     delta token is kept: never the token itself)
    POST /sources/{name}/poll        what `POST /api/poll/SOURCE` does (that path stays)
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from bridge import jsontext
from bridge.api import models
from bridge.api.events import Caller, RuntimeDep
from bridge.api.problems import ApiProblem, responses
from bridge.events import format_time
from bridge.runtime import Runtime
from bridge.status.summary import collect, with_iso_times
from bridge.store.base import PollState
from bridge.web.poll_now import is_polled

log = logging.getLogger("bridge.api")

router = APIRouter(tags=["sources"])


async def source_items(runtime: Runtime) -> list[dict[str, Any]]:
    """Each source as `bridge status --json` shows it."""
    summary = await collect(runtime.config, runtime.store, runtime.budgets.uses())
    items: list[dict[str, Any]] = with_iso_times([asdict(s) for s in summary.sources])
    return items


@router.get("/sources", response_model=models.SourceList)
async def list_sources(runtime: RuntimeDep) -> models.SourceList:
    """Every source: kind, status, events, last poll or receive, last error, faults, gaps."""
    return models.SourceList.model_validate({"sources": await source_items(runtime)})


def _watermark(mode: str | None, state: PollState) -> tuple[Any, bool]:
    """Where a poll resumes (parsed), and whether a delta token is kept (never shown)."""
    if state.cursor is None:
        return None, False
    if mode == "delta":
        return None, True
    try:
        return jsontext.loads(state.cursor), False
    except ValueError:
        return state.cursor, False


def _budget(runtime: Runtime, name: str | None) -> dict[str, Any] | None:
    """The source's budget and its use now (the running poller's)."""
    if name is None:
        return None
    use = next((u for u in runtime.budgets.uses() if u.name == name), None)
    return asdict(use) if use is not None else {"name": name}


def poll_info(runtime: Runtime, name: str, mode: str | None, state: PollState) -> dict[str, Any]:
    """A polled source's stored state, its budget and its hold."""
    watermark, token_kept = _watermark(mode, state)
    source = runtime.config.sources[name]
    holds = runtime.poll_holds() if runtime.poll_holds is not None else {}
    hold = holds.get(name)
    return {
        "polls": state.polls,
        "failures": state.failures,
        "consecutive_failures": state.consecutive_failures,
        "last_ok": format_time(state.last_ok_ms) if state.last_ok_ms is not None else None,
        "last_error": state.last_error,
        "last_status": state.last_status,
        "requests": state.requests,
        "not_modified": state.not_modified,
        "interval_s": state.interval_s,
        "pending_deletes": state.pending_deletes,
        "watermark": watermark,
        "token_kept": token_kept,
        "budget": _budget(runtime, source.poll.budget if source.poll is not None else None),
        "held_until": format_time(math.ceil(hold[0] * 1000)) if hold else None,
    }


@router.get("/sources/{name}", response_model=models.SourceDetail, responses=responses("not-found"))
async def get_source(runtime: RuntimeDep, name: str) -> models.SourceDetail:
    """One source, and for a polled one its stored state."""
    item = next((s for s in await source_items(runtime) if s["name"] == name), None)
    if item is None:
        raise ApiProblem("not-found", f"no source named {name!r}")
    poll = None
    if is_polled(runtime.config, name):
        state = await runtime.store.load_poll_state(name)
        poll = poll_info(runtime, name, item["mode"], state)
    return models.SourceDetail.model_validate({**item, "poll": poll})


@router.post(
    "/sources/{name}/poll",
    response_model=models.PollResult,
    responses=responses("not-found", "poll-held", "no-poller", "poll-timeout"),
)
async def poll_source(runtime: RuntimeDep, caller: Caller, name: str) -> models.PollResult:
    """Poll a polled source now and answer with the poll's outcome (`ok`: it succeeded)."""
    if not is_polled(runtime.config, name):
        raise ApiProblem("not-found", f"{name!r} is not a polled source")
    if runtime.poll_now is None:
        raise ApiProblem("no-poller", "this bridge runs no poller")
    log.info("api: %s asked for a poll of %s now", caller.who, name)
    try:
        result = await runtime.poll_now(name)
    except KeyError as exc:  # removed by a reload in the meantime
        raise ApiProblem("not-found", f"{name!r} is not a polled source") from exc
    if "held_until" in result:
        retry = {"retry-after": str(result["retry_after_s"])}
        raise ApiProblem("poll-held", str(result["error"]), headers=retry, extra=result)
    if not result["polled"]:
        raise ApiProblem("poll-timeout", str(result["error"]), extra=result)
    return models.PollResult.model_validate(result)

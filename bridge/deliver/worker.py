"""The Deliverer: sends the deliveries claims.py claims and queues, records every attempt.

    claims.py: claim_due in batches -> a queue per target -> a send per free slot
    send (the target's kind) -> outcome (policy.py) -> record (recorder.py: one flush at a time)

- Each target has its own number of requests in flight (`concurrency`), an optional pace
  (`rate` per second), a circuit breaker and a disabled flag (after a 410); their state is
  persisted in the `targets` table with each attempt, so restarts keep it.
- New events wake the claim loop at once through the hub; other writers of the database (the
  CLI's `redeliver`, another process) are found by a scan every `SCAN_S`.
- How an event reaches a target is its kind's (`kinds/`: a webhook's POST, a broker's
  publish): one `Kind` per kind configured, its connections shared by its targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from starlette.routing import BaseRoute

from bridge import metrics, tracing
from bridge.config import Config, TargetConfig
from bridge.deliver.alerts import tell_attempt
from bridge.deliver.claims import Claims, wanted
from bridge.deliver.kinds import Answer, Builds, Kind, open_kind
from bridge.deliver.kinds.webhook import describe
from bridge.deliver.lines import circuit_line, log_attempt
from bridge.deliver.policy import CIRCUIT_GAUGE, Circuit, Decision, decide
from bridge.deliver.recorder import Recorder
from bridge.deliver.request import TransformError
from bridge.deliver.targets import Ready, Target
from bridge.errors import MissingExtra, StoreError
from bridge.events import Event, now_ms
from bridge.logs import plural
from bridge.masking import mask_text
from bridge.repeats import RepeatLog
from bridge.runtime import Runtime
from bridge.store.base import TargetState
from bridge.store.deliveries import AttemptRecord, Claim

log = logging.getLogger("bridge.deliver")

# What an attempt tells once recorded (`alerts.tell_attempt`): its decision, the circuit
# before it, and the target's state before and after when the attempt disabled it.
Told = tuple[Decision, Circuit, tuple[TargetState, TargetState] | None]

REFRESH_S = 1.0  # how often targets' state (`bridge target enable`) and gauges are re-read
# ... but the gauges' count, which walks every waiting row, takes at most this share of the time.
GAUGES_SHARE = 0.02
__all__ = ["Answer", "Deliverer", "Ready", "Target", "describe"]


def _base(config: Config) -> Path:
    """The folder relative paths of the config start from."""
    return config.path.parent if config.path is not None else Path.cwd()


def result_label(answer: Answer) -> str:
    """The `result` label of an attempt: acked (by a broker), 2xx .. 5xx, timeout or error."""
    if answer.acked:
        return "acked"
    if answer.status_code is not None:
        return f"{answer.status_code // 100}xx"
    return "timeout" if answer.error and answer.error.startswith("timed out") else "error"


class Deliverer:
    """The delivery engine of one daemon (a `Component`)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.targets: dict[str, Target] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._sends: dict[int, asyncio.Task[None]] = {}  # delivery id -> its send
        self._kinds: dict[str, Kind] = {}  # kind -> its shared client
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._refreshed_at = 0.0
        self._gauges_due = 0.0  # monotonic seconds: when the backlog gauges are read again
        self._recorder = Recorder(self.store)
        self._claims = Claims(
            self.store, self._recorder, self.targets, self._sends, self._begin, self._prepare
        )
        self._repeats = RepeatLog(log)  # a locked store's failures said once, then counted

    # -- the Component protocol -------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """No routes: the status of deliveries is in the CLI and the status page."""
        return []

    async def start(self) -> None:
        """Load targets' state, open the HTTP client and start claiming."""
        self._event_loop = asyncio.get_running_loop()
        states = await self.store.target_states()
        for name, config in self.runtime.config.targets.items():
            self._add(name, config, states.get(name))
            if self.targets[name].circuit.state != "closed":
                # Opened before this start (and told then): its closing is news.
                self.runtime.operational.circuit_was_open(name, now_ms())
        for kind in sorted({t.kind for t in self.runtime.config.targets.values()}):
            self._kind(kind)  # a missing extra stops the start with one line (MissingExtra)
        self.runtime.hub.subscribe(self._on_recorded)
        self._loop_task = asyncio.create_task(self._run(), name="deliverer")
        log.info("delivering to %s", plural(len(self.targets), "target"))

    async def stop(self, grace_s: float) -> None:
        """Stop claiming; let sends in flight finish within `grace_s`, then cancel them."""
        self._stopping = self._claims.stopping = True
        self.runtime.hub.unsubscribe(self._on_recorded)
        if self._loop_task is not None:
            # Let a claim being written finish (its rows are then released), then end.
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._loop_task), timeout=grace_s)
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for target in self.targets.values():
            self._claims.give_back(target)  # claimed, never sent: claimable again at once
        sends = dict(self._sends)
        if sends:
            _done, pending = await asyncio.wait(sends.values(), timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            cut = [i for i, t in sends.items() if t in pending]
            if cut:
                log.info("stopped %d deliveries in flight; they will be sent again", len(cut))
                self._recorder.release(cut)
        await self._recorder.drain()  # the outcomes and releases still to write
        for kind in self._kinds.values():
            await kind.close()
        self._repeats.flush()

    async def reload(self, config: Config) -> None:
        """New targets start receiving, removed ones stop being claimed, changes apply."""
        states = await self.store.target_states()
        for name in list(self.targets):
            if name not in config.targets:
                # Its rows stay in the outbox; sends in flight finish on their own.
                self._claims.give_back(self.targets.pop(name))
                log.info("target %s removed: its deliveries wait in the outbox", name)
        for name, target_config in config.targets.items():
            if name in self.targets:
                self.targets[name].configure(target_config, _base(config))
            else:
                self._add(name, target_config, states.get(name))
                log.info("target %s added", name)
        self._wake.set()

    # -- claiming ---------------------------------------------------------------------------

    def _kind(self, name: str) -> Kind:
        """The shared client of kind `name`, opened on first use (its library imported then)."""
        kind = self._kinds.get(name)
        if kind is None:
            kind = self._kinds[name] = open_kind(name)
        return kind

    def _add(self, name: str, config: TargetConfig, state: TargetState | None) -> None:
        target = Target(name, config)
        target.configure(config, _base(self.runtime.config))
        target.adopt(state)
        self.targets[name] = target

    def _on_recorded(self, events: Sequence[Event]) -> None:
        loop = self._event_loop
        if loop is None or not self.targets or self._wake.is_set():
            # Nothing to claim, or a wake-up is due already: every webhook stored ends here,
            # and a wake-up is a turn of the claim loop (a task and a timer).
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                if time.monotonic() - self._refreshed_at >= REFRESH_S:
                    await self._refresh()
                wait_s = await self._claims.refill()
                self._repeats.passed("claim", "deliveries are claimed again")
            except StoreError as exc:
                self._repeats.warning("claim", "cannot claim deliveries: %s", exc)
                wait_s = 1.0
            except Exception:
                # A bug must not stop delivery for good: log it, and try again shortly.
                log.exception("the delivery loop failed; retrying in 1 s")
                wait_s = 1.0
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait_s)

    def _prepare(self, target: Target, claims: list[Claim]) -> list[Ready | None]:
        """The requests of a claimed batch, built together (by a kind that has `build`;
        not when spans are exported: a span's id is in its request and starts at its send)."""
        build = getattr(self._kinds.get(target.kind), "build", None)
        if build is None or self.runtime.tracer.is_exporting:
            return [None] * len(claims)
        at_ms = now_ms()
        out: list[Ready | None] = []
        for claim in claims:
            trace = tracing.child(tracing.of_event(claim.event))
            try:
                out.append(
                    Ready(at_ms // 1000, target.config, build(target, claim.event, at_ms, trace))
                )
            except Exception:
                out.append(None)  # cannot be built (a transform fails): the send says why
        return out

    def _begin(self, target: Target, claim: Claim, probe: bool, ready: Ready | None) -> None:
        self._started(target, claim, probe)
        task = asyncio.create_task(self._slot(target, claim, ready))
        self._sends[claim.delivery_id] = task

    def _started(self, target: Target, claim: Claim, probe: bool) -> None:
        target.in_flight += 1
        if probe:
            target.probing = True
            self._change_circuit(target, target.circuit.probing())

    async def _refresh(self) -> None:
        """Re-read targets' state (another process may have enabled one) and, when due, the
        gauges: at most every REFRESH_S, and less often when counting a large backlog takes
        long (GAUGES_SHARE of the time at most)."""
        self._refreshed_at = time.monotonic()
        states = await self.store.target_states()
        for name, target in self.targets.items():
            state = states.get(name) or TargetState(name)
            if target.pending_writes == 0 and state != target.persisted:
                was_disabled, before = target.disabled_ms is not None, target.circuit
                target.adopt(state)
                target.probing = False
                self._claims.pump(target)  # disabled meanwhile: what it has queued is given back
                if was_disabled and target.disabled_ms is None:
                    log.info("target %s enabled", name)
                elif not was_disabled and state.disabled_ms is not None:
                    # `bridge target disable`, the admin pages or the API.
                    log.info("target %s disabled: %s", name, state.disabled_reason)
                    self.runtime.operational.target_disabled(
                        name, state.disabled_reason, state.disabled_ms
                    )
                # Closed in the database: `bridge target reset|enable` or the admin pages.
                line = circuit_line(name, before, target.circuit, by="reset")
                if line and target.circuit.state == "closed":
                    log.info("%s", line)
                    self.runtime.operational.circuit_closed(name, by="reset")
        if self._refreshed_at < self._gauges_due:
            return
        began = time.monotonic()
        counts = await self.store.delivery_counts(("pending", "failed", "dead"))
        # From the refresh's start, as its next one is: else every other one would skip them.
        took_s = time.monotonic() - began
        self._gauges_due = self._refreshed_at + max(REFRESH_S, took_s / GAUGES_SHARE)
        for name in self.targets:
            by_status = counts.get(name, {})
            metrics.BACKLOG.labels(name).set(
                by_status.get("pending", 0) + by_status.get("failed", 0)
            )
            metrics.DEAD.labels(name).set(by_status.get("dead", 0))

    # -- sending ----------------------------------------------------------------------------

    async def _slot(self, target: Target, claim: Claim, ready: Ready | None) -> None:
        """Send `claim`, then whatever the target's queue lets this slot send next, in this
        one task: a task for each send cost the loop about 2.5 µs more."""
        task = self._sends[claim.delivery_id]
        taken: Claim | None = None  # taken off the queue by this slot, its send not begun
        try:
            while True:
                await self._deliver(target, claim, ready)
                if (send := self._claims.next_send(target)) is not None:
                    claim, probe, ready = send
                    taken = claim
                    self._sends[claim.delivery_id] = task
                    self._started(target, claim, probe)
                    if target.queue and target.in_flight < target.config.concurrency:
                        self._claims.pump(target)  # more free slots: a probe's success opens all
                # Wake the loop only when it has a batch to claim (or a stop to notice).
                if self._stopping or wanted(target, now_ms()) > 0:
                    self._wake.set()
                if send is None:
                    return
                taken = None
        except BaseException:
            # A send cancelled from outside `stop` (a library's stray CancelledError), or a bug:
            # the rest of the queue must still go, as each send's end makes it go.
            if taken is not None and self._sends.pop(taken.delivery_id, None) is not None:
                target.in_flight -= 1
                self._recorder.release([taken.delivery_id])
            self._claims.pump(target)
            self._wake.set()
            raise

    async def _deliver(self, target: Target, claim: Claim, ready: Ready | None) -> None:
        try:
            if target.pacer is not None:
                await target.pacer.wait()
            at_ms = now_ms()
            started = time.perf_counter()
            if self.runtime.tracer.is_exporting:
                answer = await self._traced_attempt(target, claim, at_ms)
            elif ready is not None and ready.fits(target, at_ms):
                # Built with its batch, in this second and with this config: sent as it is.
                kind = cast(Builds, self._kind(target.kind))
                answer = await kind.post(target, ready.request)
            else:
                # No span: only the attempt's `traceparent`, in the event's trace.
                trace = tracing.child(tracing.of_event(claim.event))
                answer = await self._attempt(target, claim, at_ms, trace)
            duration_ms = round((time.perf_counter() - started) * 1000)
            record, told = self._outcome(target, claim, answer, at_ms, duration_ms)
            if record.target_state is not None:
                target.pending_writes += 1
            # The send ends once the answer is in: the next one need not wait for the commit
            # (an ordered subject's next delivery is claimable only after it); the recorder
            # calls back once it is written.
            self._recorder.add(
                record,
                functools.partial(self._recorded, target, claim, answer, record, told),
                soon=target.config.ordering == "subject",
            )
        except Exception:
            # The lease expires and the delivery is tried again.
            log.exception("delivering %s to %s failed", claim.event.id, target.name)
        finally:
            self._sends.pop(claim.delivery_id, None)
            target.in_flight -= 1

    async def _traced_attempt(self, target: Target, claim: Claim, at_ms: int) -> Answer:
        """The attempt, in a span of the event's trace (only when spans are exported)."""
        parent = tracing.of_event(claim.event)
        span = self.runtime.tracer.begin(
            "deliver", parent, "client",
            {"bridge.target": target.name, "cloudevents.event_id": claim.event.id,
             "bridge.attempt": claim.attempts + 1},
        )  # fmt: skip
        answer = await self._attempt(target, claim, at_ms, span.context)
        span.end(answer.error, {"http.response.status_code": answer.status_code})
        return answer

    async def _attempt(
        self, target: Target, claim: Claim, at_ms: int, trace: tracing.TraceContext
    ) -> Answer:
        """Send through the target's kind; a message that cannot be built is an answer too."""
        try:
            kind = self._kind(target.kind)
            return await kind.send(target, claim.event, at_ms, trace)
        except TransformError as exc:
            return Answer(None, error=mask_text(str(exc), target.secrets), is_final=True)
        except MissingExtra as exc:
            # `bridge check` names the extra; a reload may add such a target to a running daemon.
            return Answer(None, error=str(exc))
        except ValueError as exc:
            # Counted as a failed attempt (retried, then dead), never a silent loop.
            return Answer(None, error="cannot build the request: " + describe(exc))

    def _outcome(
        self, target: Target, claim: Claim, answer: Answer, at_ms: int, duration_ms: int
    ) -> tuple[AttemptRecord, Told]:
        """The attempt's record, and what an operational event needs to tell of it (`Told`);
        the target's circuit (and disabled flag) take it in."""
        done_ms = at_ms + duration_ms
        if answer.is_final:
            decision = Decision("dead", done_ms)
        elif answer.acked:
            decision = Decision("delivered", done_ms)
        else:
            decision = decide(
                answer.status_code,
                # The schedule starts again at a redelivery; the count goes on.
                attempts=claim.attempts + 1 - claim.retry_from,
                retry_s=target.config.retry_s,
                now_ms=done_ms,
                retry_after=answer.retry_after,
                max_wait_s=self.runtime.config.limits.max_wait_s,
            )
        before = (target.disabled_ms, target.circuit)
        # What an operational event needs to tell a disabled target (rare: built only then).
        was = target.state() if decision.disables_target else None
        if not answer.is_final:
            self._update_target(target, decision, done_ms)
        # The target's state goes with the attempt only when it changed.
        changed = (target.disabled_ms, target.circuit) != before
        error = answer.error
        if error is None and decision.is_failure and answer.status_code is not None:
            error = "; ".join(filter(None, (f"answered {answer.status_code}", decision.note)))
        record = AttemptRecord(
            claim.delivery_id,
            claim.event.id,
            target.name,
            at_ms,
            duration_ms,
            answer.status_code,
            answer.excerpt,
            error,
            decision.status,
            decision.next_ms,
            target.state() if changed else None,
            transformed=target.transform is not None,
        )
        states = (was, target.state()) if was is not None else None
        return record, (decision, before[1], states)

    def _recorded(
        self,
        target: Target,
        claim: Claim,
        answer: Answer,
        record: AttemptRecord,
        told: Told,
        error: BaseException | None,
    ) -> None:
        """An attempt's record is written (or `error` says why not): count it and say it."""
        try:
            if error is not None:
                raise error
            # Counted once written: a metric never says delivered before the store does.
            self._count(target, claim, answer, record)
            if record.target_state is not None:
                target.persisted = record.target_state
            decision, circuit_before, states = told
            tell_attempt(
                self.runtime.operational, target.name, claim, decision,
                (circuit_before, target.circuit), states, record.error, is_final=answer.is_final,
            )  # fmt: skip
            self._repeats.passed(
                ("record", target.name), "attempts to %s are recorded again", target.name
            )
        except StoreError as exc:
            # The lease expires and the delivery is sent again: at least once.
            self._repeats.warning(
                ("record", target.name),
                "cannot record an attempt of %s to %s: %s",
                claim.event.id,
                target.name,
                exc,
            )
        finally:
            if record.target_state is not None:
                target.pending_writes -= 1

    def _update_target(self, target: Target, decision: Decision, at_ms: int) -> None:
        if target.probing:
            target.probing = False
        if decision.disables_target:
            if target.disabled_ms is None:
                target.disabled_ms = at_ms
                log.warning(
                    "target %s answered 410 Gone: disabled until `bridge target enable %s`",
                    target.name,
                    target.name,
                )
        elif decision.is_failure:
            self._change_circuit(target, target.circuit.on_failure(at_ms, target.config.circuit))
        else:
            self._change_circuit(target, target.circuit.on_success())

    def _change_circuit(self, target: Target, circuit: Circuit) -> None:
        """Set a target's circuit; a change of its state is one line in the log, at info."""
        before, target.circuit = target.circuit, circuit
        if line := circuit_line(target.name, before, circuit):
            metrics.CIRCUIT.labels(target.name).set(CIRCUIT_GAUGE[circuit.state])
            log.info("%s", line)

    def _count(self, target: Target, claim: Claim, answer: Answer, record: AttemptRecord) -> None:
        done_ms = record.at_ms + record.duration_ms
        span_ms = (record.at_ms, done_ms)
        target.meter(metrics.ATTEMPTS, result_label(answer)).inc()
        result = (answer.status_code, answer.error or None)
        if record.status == "delivered":
            target.meter(metrics.DELIVERIES, "delivered").inc()
            latency_s = max(done_ms - claim.event.recorded_ms, 0) / 1000
            target.meter(metrics.DELIVERY_LATENCY).observe(latency_s)
            level = logging.INFO if self.runtime.config.server.log_accepted else logging.DEBUG
            log_attempt(log, level, claim, target.name, result, span_ms, "delivered")
        elif record.status == "dead":
            target.meter(metrics.DELIVERIES, "dead").inc()
            log_attempt(log, logging.WARNING, claim, target.name, result, span_ms, "dead")
        else:
            log_attempt(log, logging.INFO, claim, target.name, result, span_ms, "failed")

"""The claim queue: due deliveries claimed in batches per target, queued in the process,
handed to the sends as the target's slots free.

    hub notice | scan timer | half a batch sent -> refill: claim_due (a lease per row)
        -> prepare (the batch's requests built together) -> queue
    queue -> pump: a send per free slot (while the target's circuit admits it); a send that
        ends takes the next one itself (`next_send`), in its own task

- A claim is a lease on the row: a process that dies leaves its leases to expire (the
  request timeout plus `LEASE_MARGIN_S`) and the deliveries are claimed again. At least once,
  never lost.
- Claims come in batches (`CLAIM_BATCH` per target, at most `BATCH_ROUNDS` times its
  concurrency; a paced target's no more than its pace sends within half the lease's margin);
  the next claim waits until half the batch is gone.
- A batch's requests are built together as it is claimed (`prepare`, the kind's `build`):
  built one at a time between sends, each cost the loop about three times as much CPU as
  in a row (measured with the bridge's webhook send against the same receiver).
- A queued delivery whose lease could run out before its request would time out is given
  back, not sent (another claim takes it again); so is what a target has queued when it is
  disabled, its circuit opens, it is removed or the daemon stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Any

from bridge.deliver.recorder import Recorder
from bridge.events import now_ms
from bridge.store.base import OutboxStore
from bridge.store.deliveries import Claim

if TYPE_CHECKING:
    from bridge.deliver.targets import Target

log = logging.getLogger("bridge.deliver")

SCAN_S = 0.2  # how often the outbox is scanned for work the hub did not announce
LEASE_MARGIN_S = 5.0  # a lease outlives the request timeout by this much
MIN_WAIT_S = 0.005
CLAIM_BATCH = 64  # deliveries claimed at once per target (one write for the batch)
BATCH_ROUNDS = 4  # ... but at most this many times the target's concurrency

# Starts the send of a claimed delivery: (target, claim, whether it is the circuit's probe,
# what `Prepare` made of it).
Begin = Callable[["Target", Claim, bool, Any], None]
# What a batch's sends need made beforehand, one entry per claim (None: nothing).
Prepare = Callable[["Target", list[Claim]], list[Any]]


def batch_size(target: Target) -> int:
    """How many deliveries are claimed at once: enough to keep the slots busy for a few
    rounds, not so many that the lease runs out in the queue."""
    config = target.config
    batch = min(CLAIM_BATCH, config.concurrency * BATCH_ROUNDS)
    if config.rate:
        # Paced: what waits in the queue longer than the lease's margin is given back.
        batch = min(batch, config.concurrency + int(config.rate * LEASE_MARGIN_S / 2))
    return batch


def wanted(target: Target, at_ms: int) -> int:
    """How many deliveries to claim for `target` now: none until half the batch is sent."""
    if target.disabled_ms is not None:
        return 0
    admits = target.circuit.admits(at_ms)
    if admits == "none":
        return 0
    if admits == "probe":
        return 0 if target.probing or target.in_flight or target.queue else 1
    held = target.in_flight + len(target.queue)
    batch = batch_size(target)
    return 0 if held > batch // 2 else batch - held


class Claims:
    """Claims due deliveries for the targets of one Deliverer and queues them per target."""

    def __init__(
        self,
        store: OutboxStore,
        recorder: Recorder,
        targets: dict[str, Target],
        sending: Container[int],
        begin: Begin,
        prepare: Prepare | None = None,
    ) -> None:
        self.store = store
        self.targets = targets  # the Deliverer's: targets added or removed show here
        self.stopping = False  # once set, nothing more is sent and what is queued goes back
        self._recorder = recorder
        self._sending = sending  # delivery ids whose send is running
        self._begin = begin
        self._prepare = prepare
        self._queued: set[int] = set()  # delivery ids claimed and queued, not yet sent

    async def refill(self) -> float:
        """Claim what is due and start sending it; return how long to wait for more."""
        at_ms = now_ms()
        limits = {n: w for n, t in self.targets.items() if (w := wanted(t, at_ms)) > 0}
        if not limits:
            return SCAN_S
        lease_s = max(self.targets[n].lease_s for n in limits)
        lease_ms = at_ms + round(lease_s * 1000)
        ordered = [n for n in limits if self.targets[n].config.ordering == "subject"]
        claimed = await self.store.claim_due(limits, at_ms, lease_ms, ordered=ordered)
        if self.stopping:
            await self.store.release([c.delivery_id for c in claimed.claims])
            return 0.0
        batches: dict[str, list[Claim]] = {}
        for claim in claimed.claims:
            batches.setdefault(claim.target, []).append(claim)
        counts = {name: len(batch) for name, batch in batches.items()}
        for name, batch in batches.items():
            if (target := self.targets.get(name)) is None:
                # Removed meanwhile (what is already on its way ends on its own).
                self._recorder.release([c.delivery_id for c in batch if not self._held(c)])
                continue
            ready = self._prepare(target, batch) if self._prepare else [None] * len(batch)
            for claim, made in zip(batch, ready, strict=True):
                self._hold(target, claim, lease_ms, made)
            self.pump(target)
        if any(counts.get(n, 0) >= limit for n, limit in limits.items()):
            return 0.0  # a full batch: there may be more due
        if claimed.next_due_ms is None:
            return SCAN_S
        return min(max((claimed.next_due_ms - now_ms()) / 1000, MIN_WAIT_S), SCAN_S)

    def _hold(self, target: Target, claim: Claim, lease_ms: int, ready: Any) -> None:
        """Queue a claimed delivery for its target."""
        if self._held(claim):
            return  # already on its way (an expired lease re-claimed): its outcome will come
        target.queue.append((claim, lease_ms, ready))
        self._queued.add(claim.delivery_id)

    def _held(self, claim: Claim) -> bool:
        """True when the delivery is being sent or queued already (an expired lease re-claimed)."""
        return claim.delivery_id in self._sending or claim.delivery_id in self._queued

    def pump(self, target: Target) -> None:
        """Send queued deliveries while the target has slots (and admits them)."""
        while (send := self.next_send(target)) is not None:
            self._begin(target, *send)

    def next_send(self, target: Target) -> tuple[Claim, bool, Any] | None:
        """The queued delivery a free slot of `target` may send now (its claim, whether it
        is the circuit's probe, what `Prepare` made of it), taken off the queue; None when
        the slots are full, the circuit or a disabled target holds it back (the queue is
        given back then), or nothing is queued."""
        while target.queue:
            at_ms = now_ms()
            admits = target.circuit.admits(at_ms)
            if self.stopping or target.disabled_ms is not None or admits == "none":
                self.give_back(target)  # an open circuit or a disabled target sends nothing
                return None
            if admits == "probe":
                if target.probing or target.in_flight:
                    return None
            elif target.in_flight >= target.config.concurrency:
                return None
            claim, lease_ms, ready = target.queue.popleft()
            self._queued.discard(claim.delivery_id)
            if at_ms + round((target.lease_s - LEASE_MARGIN_S) * 1000) > lease_ms:
                # Its lease could end before the request times out: claimed again later.
                self._recorder.release([claim.delivery_id])
                continue
            return claim, admits == "probe", ready
        return None

    def give_back(self, target: Target) -> None:
        """Release the leases of a target's queued deliveries (with the next flush)."""
        ids = [claim.delivery_id for claim, _, _ in target.queue]
        target.queue.clear()
        self._queued.difference_update(ids)
        self._recorder.release(ids)

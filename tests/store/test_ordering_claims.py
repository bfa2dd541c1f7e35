"""`ordering: subject` in the claim query, on SQLite and PostgreSQL, with two replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bridge.events import Event, event_id, now_ms
from bridge.store import NewEvent, Store
from bridge.store.deliveries import AttemptRecord, Claim


def subject_event(seq: int, subject: str | None) -> Event:
    return Event(event_id("push", str(seq)), "push", "thing.happened", "push", {"seq": seq},
                 now_ms(), subject=subject)  # fmt: skip


def record(store: Store, claim: Claim, status: str, at: int) -> None:
    rec = AttemptRecord(claim.delivery_id, claim.event.id, claim.target, at, 1,
                        200 if status == "delivered" else 500, None, None, status, at)  # fmt: skip
    asyncio.run(store.record_attempts([rec]))


def seqs(claims: list[Claim]) -> list[int]:
    return sorted(c.event.data["seq"] for c in claims)


def test_only_the_first_waiting_delivery_of_a_subject_is_claimed(
    backend: Callable[..., Store],
) -> None:
    one, two = backend("one"), backend("two")
    # a: 0 2 4, b: 1 3, no subject: 5 6
    subjects = ["a", "b", "a", "b", "a", None, None]
    events = [subject_event(i, s) for i, s in enumerate(subjects)]
    asyncio.run(one.record_events([NewEvent(e, ["t", "plain"]) for e in events]))
    at = now_ms() + 10

    async def claim_both() -> tuple[list[Claim], list[Claim]]:
        a, b = await asyncio.gather(
            one.claim_due({"t": 10}, at, at + 60_000, ordered=["t"]),
            two.claim_due({"t": 10}, at, at + 60_000, ordered=["t"]),
        )
        return a.claims, b.claims

    first, second = asyncio.run(claim_both())
    # Between two replicas claiming at once: the head of each subject, and the unordered.
    assert seqs(first + second) == [0, 1, 5, 6]
    # A target without ordering takes everything.
    plain = asyncio.run(one.claim_due({"plain": 10}, at, at + 60_000))
    assert len(plain.claims) == 7
    # While the heads are leased (in flight), nothing more of their subjects.
    assert asyncio.run(two.claim_due({"t": 10}, at, at + 60_000, ordered=["t"])).claims == []
    heads = {c.event.data["seq"]: c for c in first + second}
    # A failed head (waiting for its retry) still holds its subject back, even when the next
    # one is due; a delivered one lets the next go.
    record(one, heads[0], "failed", at + 100_000)
    for seq in (1, 5, 6):
        record(one, heads[seq], "delivered", at)
    got = asyncio.run(two.claim_due({"t": 10}, at + 1, at + 60_000, ordered=["t"])).claims
    assert seqs(got) == [3]
    # A dead delivery does not block its subject.
    record(two, got[0], "dead", at)
    retried = asyncio.run(one.claim_due({"t": 10}, at + 100_000, at + 200_000, ordered=["t"]))
    assert seqs(retried.claims) == [0]
    record(one, retried.claims[0], "dead", at)
    after_dead = asyncio.run(one.claim_due({"t": 10}, at + 100_000, at + 200_000, ordered=["t"]))
    assert seqs(after_dead.claims) == [2]
    # Redelivering a dead one puts it back at its place: it goes before the later ones.
    record(one, after_dead.claims[0], "failed", at)
    asyncio.run(one.redeliver([events[0].id], "t", at))
    requeued = asyncio.run(two.claim_due({"t": 10}, at + 100_000, at + 200_000, ordered=["t"]))
    assert seqs(requeued.claims) == [0]


def test_deliveries_keep_whether_a_transform_applied(any_store: Store) -> None:
    store = any_store
    ev = subject_event(1, "s")
    asyncio.run(store.record_event(ev, ["t"]))
    at = now_ms() + 10
    (claim,) = asyncio.run(store.claim_due({"t": 1}, at, at + 1_000)).claims
    assert claim.event.subject == "s"
    rec = AttemptRecord(claim.delivery_id, ev.id, "t", at, 1, None, None, "transform failed",
                        "dead", at, transformed=True)  # fmt: skip
    asyncio.run(store.record_attempts([rec]))
    (row,) = asyncio.run(store.list_deliveries(target="t"))
    assert row.transformed and row.status == "dead" and row.last_error == "transform failed"


def test_events_keep_their_trace_context(any_store: Store) -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    ev = Event(event_id("push", "t"), "push", "x", "push", {}, now_ms(), traceparent=parent,
               tracestate="a=b")  # fmt: skip
    asyncio.run(any_store.record_event(ev, ["t"]))
    stored = asyncio.run(any_store.get_event(ev.id))
    assert stored is not None and (stored.traceparent, stored.tracestate) == (parent, "a=b")
    at = now_ms() + 10
    (claim,) = asyncio.run(any_store.claim_due({"t": 1}, at, at + 1_000)).claims
    assert claim.event.traceparent == parent

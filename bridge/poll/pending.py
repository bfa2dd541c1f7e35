"""Which keys missing from a walk are deleted, and which are only pending (pure).

A list read page by page is not read at one moment. When an item before the page being read
is removed, every later item moves up one place, and the item that moves from the next page
onto the page already read is missing from this walk although it was never deleted (an item
added there instead makes one item appear on two pages). The next walk finds it again, with
different page boundaries. So a key missing from a walk of several pages is *pending*: kept
in the snapshot (no `created` when it is seen again: it was never deleted), and deleted only
once `deletes.confirm` walks in a row have lacked it; with `auto`, two when the second is
settled (the list did not move under it), else five, since a list that keeps shifting can
move the same item past a page boundary in two walks running. A walk of one page is one
answer, the whole list at one moment: with `auto`, what it lacks is deleted at once.

The pending keys are stored with the snapshot, in the poll's own transaction (see
`PollCommit.pending`), so a restart neither forgets nor repeats a confirmation.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from bridge.store.base import PendingDelete


@dataclass(slots=True)
class Confirmation:
    """What one walk decides about the keys it lacked."""

    deleted: list[str] = field(default_factory=list)  # confirmed: emitted as `deleted`
    pending: dict[str, PendingDelete] = field(default_factory=dict)  # all pending after it
    changed: bool = False  # `pending` differs from the stored pending keys
    new: int = 0  # keys pending since this walk


def confirm_deletes(
    missing: Iterable[str],
    pending: Mapping[str, PendingDelete],
    walks_needed: tuple[int, int],
    at_ms: int,
    *,
    seen_twice: bool = False,
) -> Confirmation:
    """Decide which keys this walk lacked (`missing`, in the snapshot's order) are deleted.

    `walks_needed` is (when settled, when not): a key is deleted when this walk makes that
    many walks in a row that lacked it. The walk is *settled* when it lacked no key that was
    not pending already and saw no key twice (`seen_twice`): nothing moved under it, so what
    it lacks is not a shift. (A shift during it would have made it miss or repeat another
    item, unless the one it missed is pending already: rarer still.) Until then a key is
    pending, counted from the stored `pending`. A pending key this walk has seen again (not
    in `missing`) is no longer pending: it was never deleted.
    """
    missing = list(missing)
    settled = not seen_twice and all(key in pending for key in missing)
    needed = walks_needed[0] if settled else walks_needed[1]
    out = Confirmation()
    for key in missing:
        before = pending.get(key)
        walks = before.walks + 1 if before is not None else 1
        if walks >= needed:
            out.deleted.append(key)
        else:
            out.pending[key] = PendingDelete(walks, before.since_ms if before else at_ms)
            out.new += before is None
    out.changed = out.pending != dict(pending)
    return out


def confirm_checked(
    missing: Iterable[str],
    pending: Mapping[str, PendingDelete],
    gone: Collection[str],
    present: Collection[str],
    at_ms: int,
) -> Confirmation:
    """Decide by what the item URLs said (`deletes.check`, see recheck.py): a key they
    answered gone is deleted, one they answered present is not pending, and one they did not
    settle stays pending, to be asked again by the next poll."""
    out = Confirmation()
    for key in missing:
        if key in gone:
            out.deleted.append(key)
        elif key not in present:
            before = pending.get(key)
            walks = before.walks + 1 if before is not None else 1
            out.pending[key] = PendingDelete(walks, before.since_ms if before else at_ms)
            out.new += before is None
    out.changed = out.pending != dict(pending)
    return out


def seen_again(pending: Mapping[str, PendingDelete], seen: Collection[str]) -> Confirmation:
    """The pending keys after a poll that saw only some items (an incremental answer): any
    key it saw is there after all; the others stay pending as they were."""
    out = Confirmation(pending={k: p for k, p in pending.items() if k not in seen})
    out.changed = len(out.pending) != len(pending)
    return out

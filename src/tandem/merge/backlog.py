"""Committed ops a CRDT replica has not applied yet: the replica, applied when needed.

The replica (``tandem.merge.replica``) is a deterministic function of (initial
state, op log). While nothing on this node reads it — no Yjs client of the
document is connected here — applying each committed op to it as it commits
buys nothing: the ops wait here, in version order, and are applied as they
would have been (the same calls, in the same order, in one Yrs transaction:
``Replica.replay_all``) when something needs the replica: a Yjs client
joining, a Yjs update to merge, a snapshot of the CRDT state, an op that must
be stamped with the update it makes. The result holds the very items eager
application makes.

The backlog is bounded (``limit``): the host applies it once it is full, so a
document nobody reads costs at most ``limit`` records of memory.

``format_free`` says whether the replica, once caught up, would still hold no
formatting item (see ``Replica.format_free``): only then may an OT op without
attributes be stored without its Yjs update.

Pure: must not import asyncio, storage, bus or network code.
"""

from __future__ import annotations

from typing import Final

from tandem.merge.replica import Replica, carries_formats, update_formats
from tandem.records import OpRecord

__all__ = ["BACKLOG_LIMIT", "Backlog"]

#: Committed ops kept unapplied per document at most (see ``docs/performance.md``,
#: "Offline merge and the CRDT replica", for the measurement behind it).
BACKLOG_LIMIT: Final = 256


class Backlog:
    """Committed ops, in version order, waiting to be applied to a replica."""

    __slots__ = ("format_free", "limit", "records")

    def __init__(self, limit: int = BACKLOG_LIMIT) -> None:
        self.limit = limit
        self.records: list[OpRecord] = []
        #: No record waiting here carries formatting.
        self.format_free = True

    def __len__(self) -> int:
        return len(self.records)

    @property
    def full(self) -> bool:
        return len(self.records) >= self.limit

    def push(self, record: OpRecord) -> None:
        """Keep ``record`` (the next committed op) for later."""
        self.records.append(record)
        if self.format_free and (
            carries_formats(record.op) or (record.crdt is not None and update_formats(record.crdt))
        ):
            self.format_free = False

    def apply_to(self, replica: Replica) -> None:
        """Apply every waiting op to ``replica``, in order, then forget them.

        Raises ``ReplicaError`` (the backlog is emptied: the replica must be
        rebuilt) when an op is not the one right after the replica's version.
        """
        records, self.records = self.records, []
        self.format_free = True
        replica.replay_all(records)

    def clear(self) -> None:
        self.records = []
        self.format_free = True

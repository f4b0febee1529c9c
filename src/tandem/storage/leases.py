"""The lease contract: one owner per document across nodes (pure; no I/O here).

A lease row per document holds the owner node, an epoch and an expiry. The
store computes every expiry with its own clock (``now() + ttl``), never a
node's. Every acquisition gives a new, higher epoch, never issued before: it
is the fencing token that
the owner passes to ``Store.commit(records, fence={doc: epoch})``, and a
commit under a stale epoch writes nothing and raises ``FencedError``.

Only a store that several processes share has leases: ``open_leases`` gives
``PostgresLeases`` (``storage/leases_sql.py``) for PostgreSQL and None for
SQLite and the memory store, where the one process owns every document and
a fence is refused as a programming error.

The node's side — when it may sequence, when to renew, its local deadline —
is ``session/ownership.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["LeaseState", "Leases", "refuse_fence", "stale_epochs"]


@dataclass(frozen=True, slots=True)
class LeaseState:
    """A document's lease as the store saw it when it ran the statement.

    ``remaining`` is the seconds to expiry on the store's clock at that moment
    (negative or ``-inf`` once expired or released).
    """

    doc: str
    owner: str
    epoch: int
    remaining: float


class Leases(Protocol):
    """Acquire, renew and release document leases (the store's clock decides expiry)."""

    async def acquire(self, doc: str, node: str, ttl: float) -> LeaseState:
        """Take ``doc``'s lease for ``node`` if it is free, expired or ``node``'s own.

        Every acquisition gives a new, higher epoch, so taking one's own live lease
        again fences this node's own earlier commits: call it only when not
        owning. Returns the row after the statement: ``owner == node`` when
        acquired, otherwise the live holder (whose ``epoch`` is unchanged).
        """

    async def renew(self, doc: str, node: str, epoch: int, ttl: float) -> LeaseState | None:
        """Extend ``node``'s live lease at ``epoch`` to ``ttl`` from now; None when it is lost.

        Lost means taken by another node, released, or already expired: an
        expired lease is never revived; the node acquires again (a new epoch)
        and reloads the document.
        """

    async def renew_many(
        self, held: Sequence[tuple[str, int]], node: str, ttl: float
    ) -> dict[str, LeaseState]:
        """``renew`` for every ``(doc, epoch)`` of ``held``, in one statement.

        Returns the renewed ones by document; one missing from the answer is lost.
        An owner of many documents renews them all in one round trip: one
        statement per document costs its node ~0.3 ms of CPU each (measured,
        docs/runbook.md "Lease tuning").
        """

    async def release(self, doc: str, node: str, epoch: int) -> bool:
        """Give back ``node``'s lease at ``epoch`` so another node can take it at once.

        Returns False if it was no longer ``node``'s at ``epoch``.
        """

    async def holder(self, doc: str) -> LeaseState | None:
        """``doc``'s lease row (live or not), or None if no node ever owned it."""


def stale_epochs(fence: Mapping[str, int], current: Mapping[str, int]) -> tuple[str, ...]:
    """The documents of ``fence`` whose epoch is not the store's ``current`` one, sorted.

    A document with no lease row at all is stale too: nobody granted that epoch.
    """
    return tuple(sorted(doc for doc, epoch in fence.items() if current.get(doc) != epoch))


def refuse_fence(fence: Mapping[str, int] | None) -> None:
    """What a one-process store does with a fence: it has no leases, so one is a bug."""
    if fence is not None:
        raise ValueError(
            "this store has no leases (one process owns every document): commit without a fence"
        )

"""The ``Store`` contract every storage backend fulfils.

A document's history is a log of ops keyed by ``(doc, version)``: version 0 is
the empty document, and the op stored at version ``v`` takes the document from
``v - 1`` to ``v``. Snapshots (the document content at some version) make
loading a long history fast; they are an optimisation and never the source of
truth for what was acknowledged — the op log is.

Rules every backend keeps (``tests/contract/test_store.py`` checks them all,
against every backend):

* ``append`` is atomic and durable: when it returns, every record in the batch
  is committed (fsync'd where the engine supports it), or none is and it raised.
* A batch may hold records for several documents; each document's versions in
  it are consecutive and continue that document's log exactly
  (``head + 1, head + 2, …``). Anything else raises ``ConflictError`` and
  writes nothing — this is what makes a second writer impossible to miss.
* ``(doc, client_id, seq)`` is unique when ``seq`` is not None: a duplicate
  raises ``ConflictError``; ``find_seq`` finds the version of a committed one.
* Reads never see a partially applied batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from tandem.errors import StorageError
from tandem.ot.delta import Delta
from tandem.records import OpRecord

__all__ = ["DocumentInfo", "LoadedDocument", "OpRecord", "Snapshot", "Store", "StorageError"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    doc: str
    version: int
    #: The document at ``version``: a delta of inserts.
    content: Delta
    #: Opaque CRDT state (Yjs update) at ``version``, if the replica keeps one.
    crdt: bytes | None = None


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    """What opening a document needs: the newest snapshot and every op after it."""

    doc: str
    snapshot: Snapshot | None
    ops: list[OpRecord] = field(default_factory=list)

    @property
    def version(self) -> int:
        if self.ops:
            return self.ops[-1].version
        return self.snapshot.version if self.snapshot else 0


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    doc: str
    version: int
    updated: float


@runtime_checkable
class Store(Protocol):
    """Durable storage for op logs and snapshots."""

    async def open(self) -> None:
        """Connect and run migrations. Idempotent."""

    async def close(self) -> None:
        """Release connections. Idempotent."""

    async def append(self, records: Sequence[OpRecord]) -> None:
        """Commit ``records`` atomically and durably (see the module rules)."""

    async def commit(
        self, records: Sequence[OpRecord], fence: Mapping[str, int] | None = None
    ) -> asyncio.Future[None] | None:
        """Commit ``records`` atomically, like ``append``; the sync may follow.

        ``fence`` maps every document in ``records`` to the lease epoch this
        node holds (``storage/leases.py``): a stale one raises ``FencedError``
        and nothing is written. Only a store with leases (``open_leases`` not
        None: PostgreSQL) accepts one; a one-process store raises ``ValueError``.

        Returns None when the records are durable already (as after ``append``),
        or a future that completes once they are (or fails if they cannot be):
        in between, every reader sees them and they survive a crash of this
        process, not a power loss.
        """

    async def load(self, doc: str) -> LoadedDocument:
        """The newest snapshot of ``doc`` and all ops after it (empty for a new doc)."""

    async def head(self, doc: str) -> int:
        """The latest committed version of ``doc`` (0 if it has no ops)."""

    async def get_ops(
        self, doc: str, from_version: int, to_version: int | None = None
    ) -> list[OpRecord]:
        """Ops with ``from_version < version <= to_version`` (to the head when None), in order."""

    async def find_seq(self, doc: str, client_id: str, seq: int) -> int | None:
        """The version at which ``(client_id, seq)`` was committed in ``doc``, if it was."""

    async def last_seq(self, doc: str, client_id: str) -> int | None:
        """The highest ``seq`` committed by ``client_id`` in ``doc`` (None if it has none)."""

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot (replacing one at the same version). Not part of the op commit."""

    async def list_documents(self) -> list[DocumentInfo]:
        """Every document with at least one op or snapshot, sorted by id."""

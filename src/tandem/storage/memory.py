"""``MemoryStore``: the reference ``Store``, in process memory.

It keeps every rule of ``storage/base.py`` the way the database backends do,
so the contract suite can hold them to it and tests elsewhere can use it
without a disk. Atomicity comes from the event loop: ``append`` checks the
whole batch, then mutates, with no ``await`` in between.

Ops and snapshot contents are held in their stored JSON form (the same bytes
SQLite and PostgreSQL keep, see ``codec``): that makes the store immune to a
caller mutating a ``Delta`` it handed in or got back, and makes it reject
exactly the ops the other backends reject. Everything else it holds is
immutable already. Data lives as long as the object: ``close`` then ``open``
on the same object keeps it, like reopening a file.

Imports only the pure storage modules; no asyncio, no drivers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tandem.storage.base import DocumentInfo, LoadedDocument, OpRecord, Snapshot
from tandem.storage.batch import check_heads, duplicate_seq, plan_batch
from tandem.storage.codec import decode_delta, encode_delta
from tandem.storage.incarnations import MemoryIncarnations
from tandem.storage.leases import refuse_fence
from tandem.storage.outbox import MemoryOutbox
from tandem.storage.revocations import MemoryRevocations

__all__ = ["MemoryStore"]


class _StoredOp(NamedTuple):
    """One stored op (a named tuple: one is made per op committed)."""

    version: int
    op: bytes
    client_id: str
    seq: int | None
    user: str
    time: float
    crdt: bytes | None = None


@dataclass(frozen=True, slots=True)
class _StoredSnapshot:
    version: int
    content: bytes
    crdt: bytes | None


@dataclass(slots=True)
class _Document:
    updated: float
    #: ``ops[i]`` is version ``i + 1``.
    ops: list[_StoredOp] = field(default_factory=list)
    #: ``(client_id, seq)`` → version.
    seqs: dict[tuple[str, int], int] = field(default_factory=dict)
    snapshots: dict[int, _StoredSnapshot] = field(default_factory=dict)

    @property
    def head(self) -> int:
        return len(self.ops)


class MemoryStore:
    """A ``Store`` in memory; nothing survives the process."""

    def __init__(self) -> None:
        self._documents: dict[str, _Document] = {}
        self._open = False
        #: The webhook outbox lives with the data, as it does in the SQL stores.
        self.outbox = MemoryOutbox()
        self.revocations = MemoryRevocations()
        self.incarnations = MemoryIncarnations()
        #: Deleted documents' markers (``storage/document_admin.py``).
        self.tombstones_: list[Any] = []

    async def open(self) -> None:
        """Mark the store usable. Idempotent."""
        self._open = True

    async def close(self) -> None:
        """Mark the store closed (the data stays with the object). Idempotent."""
        self._open = False

    async def append(self, records: Sequence[OpRecord]) -> None:
        """Commit ``records`` atomically (see ``storage/base.py``)."""
        self._check_open()
        runs = plan_batch(records)
        # Check everything first: once we start mutating, nothing may fail.
        documents = self._documents
        check_heads(
            runs, {run.doc: documents[run.doc].head for run in runs if run.doc in documents}
        )
        encoded: list[tuple[str, _StoredOp]] = []
        for run in runs:
            state = documents.get(run.doc)
            seqs = state.seqs if state is not None else {}
            for record in run.records:
                if record.seq is not None and (record.client_id, record.seq) in seqs:
                    raise duplicate_seq(record.doc, record.client_id, record.seq)
                stored = _StoredOp(
                    record.version,
                    encode_delta(record.op),
                    record.client_id,
                    record.seq,
                    record.user,
                    record.time,
                    record.crdt,
                )
                encoded.append((record.doc, stored))
        for run in runs:
            state = self._documents.setdefault(run.doc, _Document(updated=run.updated))
            state.updated = run.updated
        for doc, stored in encoded:
            state = self._documents[doc]
            state.ops.append(stored)
            if stored.seq is not None:
                state.seqs[(stored.client_id, stored.seq)] = stored.version

    async def commit(
        self, records: Sequence[OpRecord], fence: Mapping[str, int] | None = None
    ) -> asyncio.Future[None] | None:
        """``append``: durable on return. One process owns everything: no ``fence``."""
        refuse_fence(fence)
        await self.append(records)
        return None

    async def load(self, doc: str) -> LoadedDocument:
        """The newest snapshot of ``doc`` and every op after it."""
        self._check_open()
        state = self._documents.get(doc)
        if state is None:
            return LoadedDocument(doc=doc, snapshot=None, ops=[])
        snapshot = None
        after = 0
        if state.snapshots:
            newest = state.snapshots[max(state.snapshots)]
            snapshot = Snapshot(doc, newest.version, decode_delta(newest.content), newest.crdt)
            after = newest.version
        return LoadedDocument(doc=doc, snapshot=snapshot, ops=self._slice(doc, state, after, None))

    async def head(self, doc: str) -> int:
        """The latest committed version of ``doc`` (0 if it has no ops)."""
        self._check_open()
        state = self._documents.get(doc)
        return state.head if state is not None else 0

    async def get_ops(
        self, doc: str, from_version: int, to_version: int | None = None
    ) -> list[OpRecord]:
        """Ops with ``from_version < version <= to_version``, in order."""
        self._check_open()
        state = self._documents.get(doc)
        if state is None:
            return []
        return self._slice(doc, state, from_version, to_version)

    async def find_seq(self, doc: str, client_id: str, seq: int) -> int | None:
        """The version at which ``(client_id, seq)`` was committed in ``doc``, if it was."""
        self._check_open()
        state = self._documents.get(doc)
        return state.seqs.get((client_id, seq)) if state is not None else None

    async def last_seq(self, doc: str, client_id: str) -> int | None:
        """The highest ``seq`` committed by ``client_id`` in ``doc`` (None if it has none)."""
        self._check_open()
        state = self._documents.get(doc)
        if state is None:
            return None
        seqs = [seq for (client, seq) in state.seqs if client == client_id]
        return max(seqs) if seqs else None

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store ``snapshot``, replacing one at the same version."""
        self._check_open()
        stored = _StoredSnapshot(snapshot.version, encode_delta(snapshot.content), snapshot.crdt)
        state = self._documents.setdefault(snapshot.doc, _Document(updated=time.time()))
        state.snapshots[snapshot.version] = stored

    async def list_documents(self) -> list[DocumentInfo]:
        """Every document with at least one op or snapshot, sorted by id."""
        self._check_open()
        return [
            DocumentInfo(doc, state.head, state.updated)
            for doc, state in sorted(self._documents.items())
        ]

    def _slice(
        self, doc: str, state: _Document, after: int, to_version: int | None
    ) -> list[OpRecord]:
        start = max(after, 0)
        stop = state.head if to_version is None else max(min(to_version, state.head), start)
        return [
            OpRecord(
                doc,
                op.version,
                decode_delta(op.op),
                op.client_id,
                op.seq,
                op.user,
                op.time,
                op.crdt,
            )
            for op in state.ops[start:stop]
        ]

    def _check_open(self) -> None:
        if not self._open:
            raise RuntimeError("the store is not open: call open() first")

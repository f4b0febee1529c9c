"""Administering stored documents: delete (tombstone), erase, copy, rename, in every store.

``DocumentAdmin`` is the contract (``tests/contract/test_document_admin.py``):

* ``remove(doc, tombstone)`` deletes every row of ``doc`` in one transaction:
  its ops, snapshots and ``documents`` row, its history (checkpoints, labels,
  compaction mark; the memory store keeps its archive apart and loses it with
  the process), its webhook deliveries and cursors,
  its incarnation (so a document created again under the id starts a new
  one, ``storage/incarnations.py``), and (erasing, ``tombstone`` None) its
  tombstones too. Deleting (a
  ``tombstone`` given) leaves exactly one row: that marker.
* ``copy(source, target)`` copies ``source``'s ops and snapshots to ``target``,
  which must have no ops or snapshots (``ConflictError`` otherwise), and
  drops ``target``'s incarnation (the copy is a new history there);
  ``rename`` copies then removes ``source`` (no tombstone), in one transaction.
* ``rows(doc)`` counts the rows that name ``doc``, table by table (what an
  erasure is checked against).

Callers close the document's sessions first (``server/doc_admin.py``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Protocol

import asyncpg  # type: ignore[import-untyped]

from tandem.errors import ConflictError, StorageError
from tandem.storage.base import Store
from tandem.storage.memory import MemoryStore
from tandem.storage.postgres import PostgresStore
from tandem.storage.sqlite import SQLiteStore, _transaction

__all__ = ["DocumentAdmin", "Tombstone", "open_document_admin"]

#: Every table with a ``doc`` column, in the order rows are deleted.
TABLES = (
    "ops",
    "snapshots",
    "documents",
    "history_checkpoints",
    "history_labels",
    "history_compacted",
    "webhook_deliveries",
    "webhook_cursors",
    "document_tombstones",
    "document_incarnations",
)
#: PostgreSQL also holds the document's lease (several nodes). Deleting it is safe:
#: a later owner draws a fresh epoch from the sequence, and a node still holding
#: the old one is fenced (no row).
POSTGRES_TABLES = (*TABLES, "document_leases")


@dataclass(frozen=True, slots=True)
class Tombstone:
    doc: str
    deleted: float
    version: int
    by: str


class DocumentAdmin(Protocol):
    async def remove(self, doc: str, tombstone: Tombstone | None) -> None: ...

    async def copy(self, source: str, target: str) -> None: ...

    async def rename(self, source: str, target: str) -> None: ...

    async def tombstones(self) -> list[Tombstone]: ...

    async def rows(self, doc: str) -> dict[str, int]: ...


def _target_taken(target: str) -> ConflictError:
    return ConflictError(f"document {target!r} already exists; delete it first")


class MemoryDocumentAdmin:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def remove(self, doc: str, tombstone: Tombstone | None) -> None:
        self._store._documents.pop(doc, None)
        self._store.incarnations.rows.pop(doc, None)
        await self._store.outbox.forget_document(doc)
        self._store.tombstones_ = [t for t in self._store.tombstones_ if t.doc != doc]
        if tombstone is not None:
            self._store.tombstones_.append(tombstone)

    async def copy(self, source: str, target: str) -> None:
        documents = self._store._documents
        if target in documents:
            raise _target_taken(target)
        self._store.incarnations.rows.pop(target, None)
        if source in documents:
            state = documents[source]
            documents[target] = type(state)(
                state.updated, list(state.ops), dict(state.seqs), dict(state.snapshots)
            )

    async def rename(self, source: str, target: str) -> None:
        await self.copy(source, target)
        self._store._documents.pop(source, None)
        self._store.incarnations.rows.pop(source, None)

    async def tombstones(self) -> list[Tombstone]:
        return list(self._store.tombstones_)

    async def rows(self, doc: str) -> dict[str, int]:
        state = self._store._documents.get(doc)
        deliveries, cursors = self._store.outbox.rows_of(doc)
        return {
            "ops": len(state.ops) if state else 0,
            "snapshots": len(state.snapshots) if state else 0,
            "documents": 1 if state else 0,
            "webhook_deliveries": deliveries,
            "webhook_cursors": cursors,
            "document_tombstones": sum(t.doc == doc for t in self._store.tombstones_),
            "document_incarnations": int(doc in self._store.incarnations.rows),
        }


class SQLiteDocumentAdmin:
    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def remove(self, doc: str, tombstone: Tombstone | None) -> None:
        erase = tombstone is None

        def run(conn: sqlite3.Connection) -> None:
            # The freed pages are overwritten with zeros (secure_delete), then the WAL
            # is moved into the file and truncated, so the old content is not left in
            # free pages or WAL frames either (best effort: a long reader can hold the
            # WAL back until the next checkpoint).
            conn.execute("PRAGMA secure_delete = ON")
            try:
                with _transaction(conn):
                    _sqlite_remove(conn, doc, erase=erase)
                    if tombstone is not None:
                        conn.execute(
                            'INSERT INTO document_tombstones (doc, deleted, version, "by") '
                            "VALUES (?, ?, ?, ?)",
                            (tombstone.doc, tombstone.deleted, tombstone.version, tombstone.by),
                        )
            finally:
                conn.execute("PRAGMA secure_delete = OFF")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        await self._store.run_write(run)

    async def copy(self, source: str, target: str) -> None:
        await self._store.run_write(lambda conn: _sqlite_copy(conn, source, target, move=False))

    async def rename(self, source: str, target: str) -> None:
        await self._store.run_write(lambda conn: _sqlite_copy(conn, source, target, move=True))

    async def tombstones(self) -> list[Tombstone]:
        def run(conn: sqlite3.Connection) -> list[Tombstone]:
            rows = conn.execute(
                'SELECT doc, deleted, version, "by" FROM document_tombstones ORDER BY deleted'
            )
            return [Tombstone(str(d), float(t), int(v), str(b)) for d, t, v, b in rows]

        return await self._store.run_read(run)

    async def rows(self, doc: str) -> dict[str, int]:
        def run(conn: sqlite3.Connection) -> dict[str, int]:
            return {
                table: int(
                    conn.execute(f"SELECT count(*) FROM {table} WHERE doc = ?", (doc,)).fetchone()[
                        0
                    ]
                )
                for table in TABLES
            }

        return await self._store.run_read(run)


def _sqlite_remove(conn: sqlite3.Connection, doc: str, *, erase: bool) -> None:
    for table in TABLES:
        if table != "document_tombstones" or erase:
            conn.execute(f"DELETE FROM {table} WHERE doc = ?", (doc,))


def _sqlite_copy(conn: sqlite3.Connection, source: str, target: str, *, move: bool) -> None:
    with _transaction(conn):
        taken = conn.execute(
            "SELECT 1 FROM documents WHERE doc = ? UNION ALL SELECT 1 FROM ops WHERE doc = ? "
            "LIMIT 1",
            (target, target),
        ).fetchone()
        if taken is not None:
            raise _target_taken(target)
        # The copy is a new history under ``target``: a new incarnation when opened.
        conn.execute("DELETE FROM document_incarnations WHERE doc = ?", (target,))
        conn.execute(
            "INSERT INTO documents (doc, created) SELECT ?, created FROM documents WHERE doc = ?",
            (target, source),
        )
        conn.execute(
            'INSERT INTO ops (doc, version, op, client_id, seq, "user", time, crdt) '
            'SELECT ?, version, op, client_id, seq, "user", time, crdt FROM ops WHERE doc = ?',
            (target, source),
        )
        conn.execute(
            "INSERT INTO snapshots (doc, version, content, crdt) "
            "SELECT ?, version, content, crdt FROM snapshots WHERE doc = ?",
            (target, source),
        )
        if move:
            _sqlite_remove(conn, source, erase=False)


class PostgresDocumentAdmin:
    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def remove(self, doc: str, tombstone: Tombstone | None) -> None:
        try:
            async with self._store.pool.acquire() as conn, conn.transaction():
                await _postgres_remove(conn, doc, erase=tombstone is None)
                if tombstone is not None:
                    await conn.execute(
                        'INSERT INTO document_tombstones (doc, deleted, version, "by") '
                        "VALUES ($1, $2, $3, $4)",
                        tombstone.doc,
                        tombstone.deleted,
                        tombstone.version,
                        tombstone.by,
                    )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc

    async def copy(self, source: str, target: str) -> None:
        await self._copy(source, target, move=False)

    async def rename(self, source: str, target: str) -> None:
        await self._copy(source, target, move=True)

    async def _copy(self, source: str, target: str, *, move: bool) -> None:
        try:
            async with self._store.pool.acquire() as conn, conn.transaction():
                # Lock both documents rows (in id order) so a commit cannot slip in.
                await conn.execute(
                    "SELECT doc FROM documents WHERE doc = ANY($1::text[]) ORDER BY doc FOR UPDATE",
                    sorted({source, target}),
                )
                taken = await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM ops WHERE doc = $1) "
                    "OR EXISTS (SELECT 1 FROM snapshots WHERE doc = $1)",
                    target,
                )
                if taken:
                    raise _target_taken(target)
                # The copy is a new history under ``target``: a new incarnation when opened.
                await conn.execute("DELETE FROM document_incarnations WHERE doc = $1", target)
                await conn.execute("DELETE FROM documents WHERE doc = $1", target)
                await conn.execute(
                    "INSERT INTO documents (doc, head, updated) "
                    "SELECT $1, head, updated FROM documents WHERE doc = $2",
                    target,
                    source,
                )
                await conn.execute(
                    'INSERT INTO ops (doc, version, op, client_id, seq, "user", time, crdt) '
                    'SELECT $1, version, op, client_id, seq, "user", time, crdt '
                    "FROM ops WHERE doc = $2",
                    target,
                    source,
                )
                await conn.execute(
                    "INSERT INTO snapshots (doc, version, content, crdt) "
                    "SELECT $1, version, content, crdt FROM snapshots WHERE doc = $2",
                    target,
                    source,
                )
                if move:
                    await _postgres_remove(conn, source, erase=False)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc

    async def tombstones(self) -> list[Tombstone]:
        try:
            rows = await self._store.pool.fetch(
                'SELECT doc, deleted, version, "by" FROM document_tombstones ORDER BY deleted'
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc
        return [Tombstone(r["doc"], r["deleted"], r["version"], r["by"]) for r in rows]

    async def rows(self, doc: str) -> dict[str, int]:
        counts = {}
        try:
            async with self._store.pool.acquire() as conn:
                for table in POSTGRES_TABLES:
                    sql = f"SELECT count(*) FROM {table} WHERE doc = $1"
                    counts[table] = int(await conn.fetchval(sql, doc))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc
        return counts


async def _postgres_remove(conn: asyncpg.Connection, doc: str, *, erase: bool) -> None:
    for table in POSTGRES_TABLES:
        if table != "document_tombstones" or erase:
            await conn.execute(f"DELETE FROM {table} WHERE doc = $1", doc)


class UnsupportedDocumentAdmin:
    """An embedder's own ``Store``: every operation raises ``StorageError`` (the API: 503)."""

    def __init__(self, kind: str) -> None:
        self._error = StorageError(f"document administration is not available for a {kind}")

    async def remove(self, doc: str, tombstone: Tombstone | None) -> None:
        raise self._error

    async def copy(self, source: str, target: str) -> None:
        raise self._error

    async def rename(self, source: str, target: str) -> None:
        raise self._error

    async def tombstones(self) -> list[Tombstone]:
        raise self._error

    async def rows(self, doc: str) -> dict[str, int]:
        raise self._error


def open_document_admin(store: Store) -> DocumentAdmin:
    """The document administration of ``store`` (unsupported for a foreign store)."""
    if isinstance(store, SQLiteStore):
        return SQLiteDocumentAdmin(store)
    if isinstance(store, PostgresStore):
        return PostgresDocumentAdmin(store)
    if isinstance(store, MemoryStore):
        return MemoryDocumentAdmin(store)
    return UnsupportedDocumentAdmin(type(store).__name__)

"""The history archive in SQLite and in PostgreSQL (the contract is ``storage/archive.py``).

Each lives beside its store's tables (migration ``history``) and uses its
store's connections: SQLite's writer thread (``synchronous=FULL``, so what it
wrote is durable on return) and reader, and PostgreSQL's pool.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson

from tandem.errors import StorageError
from tandem.ot.delta import Delta
from tandem.storage.archive import Checkpoint, Label
from tandem.storage.codec import decode_delta, encode_delta
from tandem.storage.postgres import PostgresStore
from tandem.storage.sqlite import SQLiteStore

__all__ = ["PostgresArchive", "SQLiteArchive"]

_CHECKPOINT_AT = (
    "SELECT version, content, authors FROM history_checkpoints "
    "WHERE doc = {0} AND version <= {1} ORDER BY version DESC LIMIT 1"
)
_AUTHORSHIP_AT = (
    "SELECT version, authors FROM history_checkpoints "
    "WHERE doc = {0} AND version <= {1} ORDER BY version DESC LIMIT 1"
)
_SNAPSHOT_AT = (
    "SELECT version, content FROM snapshots "
    "WHERE doc = {0} AND version <= {1} ORDER BY version DESC LIMIT 1"
)
#: One read, one decode: the newer of the snapshot and the checkpoint at or below.
_CONTENT_AT = (
    "SELECT version, content FROM ("
    "SELECT * FROM (SELECT version, content{2} AS content FROM snapshots "
    "WHERE doc = {0} AND version <= {1} ORDER BY version DESC LIMIT 1) AS s "
    "UNION ALL "
    "SELECT * FROM (SELECT version, content FROM history_checkpoints "
    "WHERE doc = {0} AND version <= {1} ORDER BY version DESC LIMIT 1) AS c"
    ") AS newest ORDER BY version DESC LIMIT 1"
)
_LAST_BEFORE = "SELECT max(version) FROM ops WHERE doc = {0} AND time < {1}"
_LABELS = (
    'SELECT doc, name, version, "user", time FROM history_labels '
    "WHERE doc = {0} ORDER BY version, name"
)
_SET_LABEL = (
    'INSERT INTO history_labels (doc, name, version, "user", time) '
    "VALUES ({0}, {1}, {2}, {3}, {4}) "
    'ON CONFLICT (doc, name) DO UPDATE SET version = excluded.version, "user" = excluded."user", '
    "time = excluded.time"
)
_SAVE_CHECKPOINT = (
    "INSERT INTO history_checkpoints (doc, version, content, authors) VALUES ({0}, {1}, {2}, {3}) "
    "ON CONFLICT (doc, version) DO UPDATE SET content = excluded.content, "
    "authors = excluded.authors"
)
_COMPACT = (
    "DELETE FROM ops WHERE doc = {0} AND version <= {1}",
    "DELETE FROM snapshots WHERE doc = {0} AND version < {1}",
    "DELETE FROM history_checkpoints WHERE doc = {0} AND version < {1}",
    "INSERT INTO history_compacted (doc, oldest) VALUES ({0}, {1}) "
    "ON CONFLICT (doc) DO UPDATE SET oldest = excluded.oldest",
)
_Q = ("?",) * 5
_D = tuple(f"${i}" for i in range(1, 6))


def _checkpoint(doc: str, row: Sequence[Any]) -> Checkpoint:
    version, content, authors = row
    return Checkpoint(doc, int(version), decode_delta(content), _spans(authors))


def _spans(authors: str | bytes) -> list[tuple[str, int]]:
    return [(str(user), int(length)) for user, length in orjson.loads(authors)]


def _authors(checkpoint: Checkpoint) -> str:
    return orjson.dumps([list(span) for span in checkpoint.authors]).decode()


class SQLiteArchive:
    """The archive in the SQLite file of ``store``."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def _one(self, sql: str, params: tuple[object, ...]) -> tuple[Any, ...] | None:
        def run(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = conn.execute(sql, params).fetchone()
            return row

        return await self._store.run_read(run)

    async def checkpoint_at(self, doc: str, version: int) -> Checkpoint | None:
        row = await self._one(_CHECKPOINT_AT.format(*_Q), (doc, version))
        return None if row is None else _checkpoint(doc, row)

    async def snapshot_at(self, doc: str, version: int) -> tuple[int, Delta] | None:
        row = await self._one(_SNAPSHOT_AT.format(*_Q), (doc, version))
        return None if row is None else (int(row[0]), decode_delta(row[1]))

    async def authorship_at(
        self, doc: str, version: int
    ) -> tuple[int, list[tuple[str, int]]] | None:
        row = await self._one(_AUTHORSHIP_AT.format(*_Q), (doc, version))
        return None if row is None else (int(row[0]), _spans(row[1]))

    async def content_at(self, doc: str, version: int) -> tuple[int, Delta] | None:
        row = await self._one(_CONTENT_AT.format("?", "?", ""), (doc, version, doc, version))
        return None if row is None else (int(row[0]), decode_delta(row[1]))

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        params = (
            checkpoint.doc,
            checkpoint.version,
            encode_delta(checkpoint.content).decode(),
            _authors(checkpoint),
        )
        await self._write([(_SAVE_CHECKPOINT.format(*_Q), params)])

    async def oldest(self, doc: str) -> int:
        row = await self._one("SELECT oldest FROM history_compacted WHERE doc = ?", (doc,))
        return 0 if row is None else int(row[0])

    async def last_before(self, doc: str, time: float) -> int:
        row = await self._one(_LAST_BEFORE.format(*_Q), (doc, time))
        return 0 if row is None or row[0] is None else int(row[0])

    async def compact(self, doc: str, oldest: int) -> None:
        if oldest <= await self.oldest(doc):
            return
        await self._write([(sql.format(*_Q), (doc, oldest)) for sql in _COMPACT])

    async def set_label(self, label: Label) -> None:
        params = (label.doc, label.name, label.version, label.user, label.time)
        await self._write([(_SET_LABEL.format(*_Q), params)])

    async def labels(self, doc: str) -> list[Label]:
        def run(conn: sqlite3.Connection) -> list[Label]:
            rows = conn.execute(_LABELS.format(*_Q), (doc,)).fetchall()
            return [Label(str(d), str(n), int(v), str(u), float(t)) for d, n, v, u, t in rows]

        return await self._store.run_read(run)

    async def delete_label(self, doc: str, name: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            with conn:
                cursor = conn.execute(
                    "DELETE FROM history_labels WHERE doc = ? AND name = ?", (doc, name)
                )
            return cursor.rowcount > 0

        return await self._store.run_write(run)

    async def _write(self, statements: list[tuple[str, tuple[object, ...]]]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    conn.execute(sql, params)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        await self._store.run_write(run)


class PostgresArchive:
    """The archive in the PostgreSQL database of ``store``."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def _one(self, sql: str, *args: object) -> asyncpg.Record | None:
        try:
            return await self._store.pool.fetchrow(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc

    async def checkpoint_at(self, doc: str, version: int) -> Checkpoint | None:
        row = await self._one(_CHECKPOINT_AT.format(*_D), doc, version)
        return None if row is None else _checkpoint(doc, tuple(row))

    async def snapshot_at(self, doc: str, version: int) -> tuple[int, Delta] | None:
        row = await self._one(_SNAPSHOT_AT.format(*_D), doc, version)
        return None if row is None else (int(row[0]), decode_delta(row[1]))

    async def authorship_at(
        self, doc: str, version: int
    ) -> tuple[int, list[tuple[str, int]]] | None:
        row = await self._one(_AUTHORSHIP_AT.format(*_D), doc, version)
        return None if row is None else (int(row[0]), _spans(row[1]))

    async def content_at(self, doc: str, version: int) -> tuple[int, Delta] | None:
        row = await self._one(_CONTENT_AT.format("$1", "$2", "::text"), doc, version)
        return None if row is None else (int(row[0]), decode_delta(row[1]))

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        content = encode_delta(checkpoint.content).decode()
        await self._write(
            [
                (
                    _SAVE_CHECKPOINT.format(*_D),
                    (checkpoint.doc, checkpoint.version, content, _authors(checkpoint)),
                )
            ]
        )

    async def oldest(self, doc: str) -> int:
        row = await self._one("SELECT oldest FROM history_compacted WHERE doc = $1", doc)
        return 0 if row is None else int(row[0])

    async def last_before(self, doc: str, time: float) -> int:
        row = await self._one(_LAST_BEFORE.format(*_D), doc, time)
        return 0 if row is None or row[0] is None else int(row[0])

    async def compact(self, doc: str, oldest: int) -> None:
        if oldest <= await self.oldest(doc):
            return
        await self._write([(sql.format(*_D), (doc, oldest)) for sql in _COMPACT])

    async def set_label(self, label: Label) -> None:
        params = (label.doc, label.name, label.version, label.user, label.time)
        await self._write([(_SET_LABEL.format(*_D), params)])

    async def labels(self, doc: str) -> list[Label]:
        try:
            rows = await self._store.pool.fetch(_LABELS.format(*_D), doc)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc
        return [Label(str(d), str(n), int(v), str(u), float(t)) for d, n, v, u, t in rows]

    async def delete_label(self, doc: str, name: str) -> bool:
        try:
            status = await self._store.pool.execute(
                "DELETE FROM history_labels WHERE doc = $1 AND name = $2", doc, name
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc
        return str(status).endswith(" 1")

    async def _write(self, statements: list[tuple[str, tuple[object, ...]]]) -> None:
        try:
            async with self._store.pool.acquire() as conn, conn.transaction():
                for sql, params in statements:
                    await conn.execute(sql, *params)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc

"""The incarnation table in SQLite and PostgreSQL (the contract is ``storage/incarnations.py``)."""

from __future__ import annotations

import sqlite3
from fnmatch import fnmatchcase
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from tandem.errors import StorageError
from tandem.storage.incarnations import Incarnation
from tandem.storage.postgres import PostgresStore
from tandem.storage.sqlite import SQLiteStore

__all__ = ["PostgresIncarnations", "SQLiteIncarnations"]

_COLUMNS = "incarnation, yjs_client, yjs_from, retired"


def _row(row: Any) -> Incarnation:
    return Incarnation(
        str(row[0]), int(row[1]), int(row[2]), Incarnation.parse_retired(str(row[3]))
    )


class SQLiteIncarnations:
    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def get(self, doc: str) -> Incarnation | None:
        def run(conn: sqlite3.Connection) -> Incarnation | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM document_incarnations WHERE doc = ?", (doc,)
            ).fetchone()
            return None if row is None else _row(row)

        return await self._store.run_read(run)

    async def create(self, doc: str, incarnation: Incarnation) -> Incarnation:
        def run(conn: sqlite3.Connection) -> Incarnation:
            conn.execute(
                f"INSERT INTO document_incarnations (doc, {_COLUMNS}) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (doc) DO NOTHING",
                (
                    doc,
                    incarnation.id,
                    incarnation.yjs_client,
                    incarnation.yjs_from,
                    incarnation.retired_text(),
                ),
            )
            conn.commit()
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM document_incarnations WHERE doc = ?", (doc,)
            ).fetchone()
            return _row(row)

        return await self._store.run_write(run)

    async def renew(self, pattern: str = "*") -> int:
        def run(conn: sqlite3.Connection) -> int:
            return renew_sqlite(conn, pattern)

        return await self._store.run_write(run)


def renew_sqlite(conn: sqlite3.Connection, pattern: str = "*") -> int:
    """Delete the incarnation rows of the documents matching ``pattern``; commit."""
    docs = [
        str(doc)
        for (doc,) in conn.execute("SELECT doc FROM document_incarnations")
        if fnmatchcase(str(doc), pattern)
    ]
    conn.executemany("DELETE FROM document_incarnations WHERE doc = ?", [(d,) for d in docs])
    conn.commit()
    return len(docs)


class PostgresIncarnations:
    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def get(self, doc: str) -> Incarnation | None:
        try:
            row = await self._store.pool.fetchrow(
                f"SELECT {_COLUMNS} FROM document_incarnations WHERE doc = $1", doc
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc
        return None if row is None else _row(row)

    async def create(self, doc: str, incarnation: Incarnation) -> Incarnation:
        try:
            async with self._store.pool.acquire() as conn:
                await conn.execute(
                    f"INSERT INTO document_incarnations (doc, {_COLUMNS}) "
                    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (doc) DO NOTHING",
                    doc,
                    incarnation.id,
                    incarnation.yjs_client,
                    incarnation.yjs_from,
                    incarnation.retired_text(),
                )
                row = await conn.fetchrow(
                    f"SELECT {_COLUMNS} FROM document_incarnations WHERE doc = $1", doc
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc
        return _row(row)

    async def renew(self, pattern: str = "*") -> int:
        try:
            async with self._store.pool.acquire() as conn, conn.transaction():
                docs = [
                    str(row["doc"])
                    for row in await conn.fetch("SELECT doc FROM document_incarnations FOR UPDATE")
                    if fnmatchcase(str(row["doc"]), pattern)
                ]
                await conn.execute(
                    "DELETE FROM document_incarnations WHERE doc = ANY($1::text[])", docs
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc
        return len(docs)

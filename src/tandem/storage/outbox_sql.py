"""The webhook outbox in SQLite and in PostgreSQL (the contract is ``storage/outbox.py``).

Each lives beside its store's tables (migration ``webhooks``) and uses its
store's connections: SQLite's writer thread (``synchronous=FULL``, so what it
wrote is durable on return) and PostgreSQL's pool.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import astuple
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from tandem.errors import StorageError
from tandem.storage.outbox import Delivery
from tandem.storage.postgres import PostgresStore
from tandem.storage.sqlite import SQLiteStore

__all__ = ["PostgresOutbox", "SQLiteOutbox"]

_COLUMNS = "id, url, doc, from_version, to_version, attempts, next_attempt, created"

#: Due deliveries that are the oldest of their (url, doc): ranges go out in order.
_DUE_WHERE = """
WHERE d.next_attempt <= {now}
  AND NOT EXISTS (
    SELECT 1 FROM webhook_deliveries AS e
    WHERE e.url = d.url AND e.doc = d.doc AND e.from_version < d.from_version
  )
ORDER BY d.next_attempt
"""
_SQLITE_DUE = f"SELECT {_COLUMNS} FROM webhook_deliveries AS d {_DUE_WHERE.format(now='?')} LIMIT ?"
# SKIP LOCKED: several nodes claim at once without taking the same row.
_POSTGRES_DUE = (
    f"SELECT {_COLUMNS} FROM webhook_deliveries AS d {_DUE_WHERE.format(now='$1')} "
    "LIMIT $2 FOR UPDATE SKIP LOCKED"
)


_SET_CURSOR = (
    "INSERT INTO webhook_cursors (url, doc, version) VALUES ({}, {}, {}) "
    "ON CONFLICT (url, doc) DO UPDATE SET version = excluded.version"
)


def _delivery(row: Sequence[Any]) -> Delivery:
    id_, url, doc, from_version, to_version, attempts, next_attempt, created = row
    return Delivery(
        str(id_),
        str(url),
        str(doc),
        int(from_version),
        int(to_version),
        int(attempts),
        float(next_attempt),
        float(created),
    )


class SQLiteOutbox:
    """The outbox in the SQLite file of ``store``."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def subscribe(self, url: str, now: float) -> float:
        def run(conn: sqlite3.Connection) -> float:
            conn.execute(
                "INSERT INTO webhook_subscriptions (url, since) VALUES (?, ?) "
                "ON CONFLICT (url) DO NOTHING",
                (url, now),
            )
            row = conn.execute(
                "SELECT since FROM webhook_subscriptions WHERE url = ?", (url,)
            ).fetchone()
            return float(row[0])

        return await self._store.run_write(run)

    async def cursors(self, url: str) -> dict[str, int]:
        def run(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute("SELECT doc, version FROM webhook_cursors WHERE url = ?", (url,))
            return {str(doc): int(version) for doc, version in rows}

        return await self._store.run_read(run)

    async def set_cursor(self, url: str, doc: str, version: int) -> None:
        await self._store.run_write(
            lambda conn: conn.execute(_SET_CURSOR.format("?", "?", "?"), (url, doc, version))
        )

    async def enqueue(self, delivery: Delivery, expected: int | None) -> bool:
        d = delivery

        def run(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT version FROM webhook_cursors WHERE url = ? AND doc = ?", (d.url, d.doc)
                ).fetchone()
                if (None if row is None else int(row[0])) != expected:
                    conn.execute("ROLLBACK")
                    return False
                conn.execute(
                    f"INSERT INTO webhook_deliveries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO NOTHING",
                    astuple(d),
                )
                conn.execute(
                    "INSERT INTO webhook_cursors (url, doc, version) VALUES (?, ?, ?) "
                    "ON CONFLICT (url, doc) DO UPDATE SET version = excluded.version",
                    (d.url, d.doc, d.to_version),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return True

        return await self._store.run_write(run)

    async def claim(self, now: float, lease: float, limit: int) -> list[Delivery]:
        def run(conn: sqlite3.Connection) -> list[Delivery]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(_SQLITE_DUE, (now, limit)).fetchall()
                conn.executemany(
                    "UPDATE webhook_deliveries SET next_attempt = ? WHERE id = ?",
                    [(now + lease, row[0]) for row in rows],
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return [_delivery(row) for row in rows]

        return await self._store.run_write(run)

    async def retry(self, id: str, attempts: int, next_attempt: float) -> None:
        await self._store.run_write(
            lambda conn: conn.execute(
                "UPDATE webhook_deliveries SET attempts = ?, next_attempt = ? WHERE id = ?",
                (attempts, next_attempt, id),
            )
        )

    async def finish(self, id: str) -> None:
        await self._store.run_write(
            lambda conn: conn.execute("DELETE FROM webhook_deliveries WHERE id = ?", (id,))
        )

    async def pending(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT count(*) FROM webhook_deliveries").fetchone()[0])

        return await self._store.run_read(run)

    async def next_due(self) -> float | None:
        def run(conn: sqlite3.Connection) -> float | None:
            found = conn.execute("SELECT min(next_attempt) FROM webhook_deliveries").fetchone()[0]
            return None if found is None else float(found)

        return await self._store.run_read(run)

    async def forget_document(self, doc: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM webhook_deliveries WHERE doc = ?", (doc,))
            conn.execute("DELETE FROM webhook_cursors WHERE doc = ?", (doc,))
            conn.execute("COMMIT")

        await self._store.run_write(run)


class PostgresOutbox:
    """The outbox in the PostgreSQL schema of ``store``."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def subscribe(self, url: str, now: float) -> float:
        try:
            async with self._store.pool.acquire() as conn:
                await conn.execute(
                    "INSERT INTO webhook_subscriptions (url, since) VALUES ($1, $2) "
                    "ON CONFLICT (url) DO NOTHING",
                    url,
                    now,
                )
                since = await conn.fetchval(
                    "SELECT since FROM webhook_subscriptions WHERE url = $1", url
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc
        return float(since)

    async def cursors(self, url: str) -> dict[str, int]:
        rows = await self._fetch("SELECT doc, version FROM webhook_cursors WHERE url = $1", url)
        return {row["doc"]: int(row["version"]) for row in rows}

    async def set_cursor(self, url: str, doc: str, version: int) -> None:
        await self._execute(_SET_CURSOR.format("$1", "$2", "$3"), url, doc, version)

    async def enqueue(self, delivery: Delivery, expected: int | None) -> bool:
        d = delivery
        try:
            async with self._store.pool.acquire() as conn, conn.transaction():
                if expected is None:  # compare-and-set: the row must not exist yet
                    moved = await conn.execute(
                        "INSERT INTO webhook_cursors (url, doc, version) VALUES ($1, $2, $3) "
                        "ON CONFLICT (url, doc) DO NOTHING",
                        d.url,
                        d.doc,
                        d.to_version,
                    )
                else:
                    moved = await conn.execute(
                        "UPDATE webhook_cursors SET version = $3 "
                        "WHERE url = $1 AND doc = $2 AND version = $4",
                        d.url,
                        d.doc,
                        d.to_version,
                        expected,
                    )
                if not moved.endswith(" 1"):
                    return False
                await conn.execute(
                    f"INSERT INTO webhook_deliveries ({_COLUMNS}) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                    *astuple(d),
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc
        return True

    async def claim(self, now: float, lease: float, limit: int) -> list[Delivery]:
        try:
            async with self._store.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(_POSTGRES_DUE, now, limit)
                await conn.execute(
                    "UPDATE webhook_deliveries SET next_attempt = $1 WHERE id = ANY($2::text[])",
                    now + lease,
                    [row["id"] for row in rows],
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc
        return [_delivery(tuple(row)) for row in rows]

    async def retry(self, id: str, attempts: int, next_attempt: float) -> None:
        await self._execute(
            "UPDATE webhook_deliveries SET attempts = $2, next_attempt = $3 WHERE id = $1",
            id,
            attempts,
            next_attempt,
        )

    async def finish(self, id: str) -> None:
        await self._execute("DELETE FROM webhook_deliveries WHERE id = $1", id)

    async def pending(self) -> int:
        rows = await self._fetch("SELECT count(*) AS n FROM webhook_deliveries")
        return int(rows[0]["n"])

    async def next_due(self) -> float | None:
        rows = await self._fetch("SELECT min(next_attempt) AS due FROM webhook_deliveries")
        due = rows[0]["due"]
        return None if due is None else float(due)

    async def forget_document(self, doc: str) -> None:
        try:
            async with self._store.pool.acquire() as conn, conn.transaction():
                await conn.execute("DELETE FROM webhook_deliveries WHERE doc = $1", doc)
                await conn.execute("DELETE FROM webhook_cursors WHERE doc = $1", doc)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc

    async def _fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        try:
            rows: list[asyncpg.Record] = await self._store.pool.fetch(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc
        return rows

    async def _execute(self, sql: str, *args: object) -> None:
        try:
            await self._store.pool.execute(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc

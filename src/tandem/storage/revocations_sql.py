"""The revocation table in SQLite and PostgreSQL (the contract is ``storage/revocations.py``)."""

from __future__ import annotations

import sqlite3

import asyncpg  # type: ignore[import-untyped]

from tandem.errors import StorageError
from tandem.storage.postgres import PostgresStore
from tandem.storage.sqlite import SQLiteStore

__all__ = ["PostgresRevocations", "SQLiteRevocations"]

_ACTIVE = "SELECT data FROM revocations WHERE expires IS NULL OR expires > {} ORDER BY created, id"


class SQLiteRevocations:
    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def add(self, id: str, data: str, created: float, expires: float | None) -> None:
        await self._store.run_write(
            lambda conn: conn.execute(
                "INSERT INTO revocations (id, data, created, expires) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (id, data, created, expires),
            )
        )

    async def active(self, now: float) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            return [str(row[0]) for row in conn.execute(_ACTIVE.format("?"), (now,))]

        return await self._store.run_read(run)

    async def prune(self, now: float) -> None:
        await self._store.run_write(
            lambda conn: conn.execute("DELETE FROM revocations WHERE expires <= ?", (now,))
        )


class PostgresRevocations:
    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def add(self, id: str, data: str, created: float, expires: float | None) -> None:
        await self._run(
            "execute",
            "INSERT INTO revocations (id, data, created, expires) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (id) DO NOTHING",
            id,
            data,
            created,
            expires,
        )

    async def active(self, now: float) -> list[str]:
        rows = await self._run("fetch", _ACTIVE.format("$1"), now)
        return [str(row["data"]) for row in rows]

    async def prune(self, now: float) -> None:
        await self._run("execute", "DELETE FROM revocations WHERE expires <= $1", now)

    async def _run(self, method: str, sql: str, *args: object) -> list[asyncpg.Record]:
        try:
            result = await getattr(self._store.pool, method)(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc
        return result if isinstance(result, list) else []

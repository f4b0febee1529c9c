"""``PostgresStore``: the backend for several nodes (asyncpg, one pool).

One ``append`` is one transaction of four round trips:

1. ``BEGIN``;
2. lock every document's head row, creating missing ones, in document-id
   order (``INSERT … ON CONFLICT DO UPDATE … RETURNING head``: the conflict
   arm row-locks the newest committed version, so a second writer — another
   task, pool or process — blocks here until the first commits, then reads the
   new head). Sorting is what keeps two multi-document batches from deadlocking;
3. check the heads (``batch.check_heads``, pure) and, if they continue every
   log, insert all ops and advance all heads in one statement over arrays;
4. ``COMMIT`` — durable when it returns under the server's
   ``synchronous_commit`` (``on`` by default; an operator who lowers it trades
   away the ack-after-durable guarantee).

A fenced ``commit`` (the owner of documents under a lease, ``storage/leases.py``)
adds one round trip before step 2: share-lock the documents' lease rows and
check their epochs; a stale one rolls everything back with ``FencedError``.

The ``(doc, version)`` primary key and the ``(doc, client_id, seq)`` unique
index stay the last line of defence: a writer that somehow skipped the lock
gets ``ConflictError`` from them, never a gap or a duplicate.

``schema`` (optional) names the PostgreSQL schema to use, created if missing;
the pool pins it with ``search_path``. Tests use a throwaway schema per test;
a deployment can host several Tandems in one database.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from tandem.errors import ConflictError, FencedError, StorageError
from tandem.storage.base import DocumentInfo, LoadedDocument, OpRecord, Snapshot
from tandem.storage.batch import check_heads, plan_batch
from tandem.storage.codec import decode_delta, encode_delta
from tandem.storage.leases import stale_epochs
from tandem.storage.schema import load_migrations, pending

__all__ = ["PostgresStore"]

#: Key of the advisory lock that serialises migrations across processes ("tandem" in ASCII).
MIGRATION_LOCK = 0x74616E64656D

P = ParamSpec("P")
R = TypeVar("R")


def _in_a_task(
    method: Callable[Concatenate[PostgresStore, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[PostgresStore, P], Coroutine[Any, Any, R]]:
    """Run ``method`` inside a task when it was started outside one.

    The fast ``/collab`` path runs a message's handler eagerly, up to its first
    suspension, before any task exists (``server/eager.run_eagerly``);
    when the pool then opens a new connection, asyncpg's ``asyncio.timeout``
    raises "Timeout should be used inside a task". A read that starts that way
    moves into a task of its own; one already in a task pays one check.
    """

    async def run(self: PostgresStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if asyncio.current_task() is None:
            return await asyncio.ensure_future(method(self, *args, **kwargs))
        return await method(self, *args, **kwargs)

    run.__doc__ = method.__doc__
    return run


_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

_LOCK_HEADS = """
INSERT INTO documents (doc, head, updated)
SELECT doc, 0, $2 FROM unnest($1::text[]) AS doc ORDER BY doc
ON CONFLICT (doc) DO UPDATE SET head = documents.head
RETURNING doc, head
"""

_COMMIT_OPS = """
WITH inserted AS (
    INSERT INTO ops (doc, version, op, client_id, seq, "user", time, crdt)
    SELECT * FROM unnest(
        $1::text[], $2::bigint[], $3::json[], $4::text[], $5::bigint[], $6::text[], $7::float8[],
        $11::bytea[]
    )
)
UPDATE documents AS d SET head = u.head, updated = u.updated
FROM unnest($8::text[], $9::bigint[], $10::float8[]) AS u(doc, head, updated)
WHERE d.doc = u.doc
"""

_LEASE_EPOCHS = """
SELECT doc, epoch FROM document_leases WHERE doc = ANY($1::text[]) ORDER BY doc FOR SHARE
"""

_OP_COLUMNS = 'version, op, client_id, seq, "user", time, crdt'


class PostgresStore:
    """A ``Store`` in PostgreSQL at ``dsn`` (``postgresql://…``)."""

    def __init__(
        self, dsn: str, *, schema: str | None = None, min_size: int = 1, max_size: int = 10
    ) -> None:
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema must be a plain SQL identifier, got {schema!r}")
        self.dsn = dsn
        self.schema = schema
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        #: Names of the migrations the last ``open`` applied (empty when up to date).
        self.applied_on_open: tuple[str, ...] = ()

    # -- lifecycle --------------------------------------------------------------

    async def open(self) -> None:
        """Create the pool and apply pending migrations. Idempotent."""
        if self._pool is not None:
            return
        settings = {"search_path": f'"{self.schema}"'} if self.schema else {}
        try:
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                server_settings=settings,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"cannot connect to PostgreSQL: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                self.applied_on_open = await _migrate(conn, self.schema)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        """Close the pool (waiting for connections in use). Idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # -- Store ----------------------------------------------------------------

    async def append(self, records: Sequence[OpRecord]) -> None:
        """Commit ``records`` in one transaction (see the module docstring)."""
        await self._append(records, None)

    async def commit(
        self, records: Sequence[OpRecord], fence: Mapping[str, int] | None = None
    ) -> asyncio.Future[None] | None:
        """``append``, under the lease epochs in ``fence`` if given: durable on return.

        With a ``fence`` (document → lease epoch, one for every document in
        ``records``), the transaction first share-locks those documents' lease
        rows, so no acquisition can slip in before it commits, and raises
        ``FencedError`` — having written nothing — if any epoch is not the
        current one (``storage/leases.py``).
        """
        await self._append(records, fence)
        return None

    async def _append(self, records: Sequence[OpRecord], fence: Mapping[str, int] | None) -> None:
        runs = plan_batch(records)
        if not runs:
            return
        ops = [record for run in runs for record in run.records]
        encoded = [encode_delta(record.op).decode() for record in ops]
        docs = [run.doc for run in runs]
        pool = self._require_pool()
        try:
            async with pool.acquire() as conn, conn.transaction():
                if fence is not None:
                    await _check_fence(conn, docs, fence)
                rows = await conn.fetch(_LOCK_HEADS, docs, min(run.updated for run in runs))
                check_heads(runs, {row["doc"]: row["head"] for row in rows})
                await conn.execute(
                    _COMMIT_OPS,
                    [r.doc for r in ops],
                    [r.version for r in ops],
                    encoded,
                    [r.client_id for r in ops],
                    [r.seq for r in ops],
                    [r.user for r in ops],
                    [r.time for r in ops],
                    docs,
                    [run.last for run in runs],
                    [run.updated for run in runs],
                    [r.crdt for r in ops],
                )
        except asyncpg.UniqueViolationError as exc:
            what = "a (client_id, seq) was already committed"
            if exc.constraint_name != "ops_client_seq":
                what = "conflict"
            raise ConflictError(f"{what}: {exc.detail or exc}") from exc
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc

    @_in_a_task
    async def load(self, doc: str) -> LoadedDocument:
        """The newest snapshot of ``doc`` and every op after it, from one MVCC snapshot."""
        pool = self._require_pool()
        try:
            async with (
                pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                row = await conn.fetchrow(
                    "SELECT version, content, crdt FROM snapshots WHERE doc = $1 "
                    "ORDER BY version DESC LIMIT 1",
                    doc,
                )
                snapshot = None
                after = 0
                if row is not None:
                    after = row["version"]
                    snapshot = Snapshot(doc, after, decode_delta(row["content"]), row["crdt"])
                ops = await _get_ops(conn, doc, after, None)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc
        return LoadedDocument(doc=doc, snapshot=snapshot, ops=ops)

    @_in_a_task
    async def head(self, doc: str) -> int:
        """The latest committed version of ``doc`` (0 if it has no ops)."""
        value = await self._fetchval("SELECT head FROM documents WHERE doc = $1", doc)
        return int(value) if value is not None else 0

    @_in_a_task
    async def get_ops(
        self, doc: str, from_version: int, to_version: int | None = None
    ) -> list[OpRecord]:
        """Ops with ``from_version < version <= to_version``, in order (a primary-key scan)."""
        pool = self._require_pool()
        try:
            async with pool.acquire() as conn:
                return await _get_ops(conn, doc, from_version, to_version)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc

    @_in_a_task
    async def find_seq(self, doc: str, client_id: str, seq: int) -> int | None:
        """The version at which ``(client_id, seq)`` was committed in ``doc``, if it was."""
        value = await self._fetchval(
            "SELECT version FROM ops WHERE doc = $1 AND client_id = $2 AND seq = $3",
            doc,
            client_id,
            seq,
        )
        return int(value) if value is not None else None

    @_in_a_task
    async def last_seq(self, doc: str, client_id: str) -> int | None:
        """The highest ``seq`` committed by ``client_id`` in ``doc`` (None if it has none)."""
        value = await self._fetchval(
            "SELECT max(seq) FROM ops WHERE doc = $1 AND client_id = $2 AND seq IS NOT NULL",
            doc,
            client_id,
        )
        return int(value) if value is not None else None

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store ``snapshot``, replacing one at the same version."""
        content = encode_delta(snapshot.content).decode()
        pool = self._require_pool()
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO documents (doc, head, updated) VALUES ($1, 0, $2) "
                    "ON CONFLICT (doc) DO NOTHING",
                    snapshot.doc,
                    time.time(),
                )
                await conn.execute(
                    "INSERT INTO snapshots (doc, version, content, crdt) VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT (doc, version) "
                    "DO UPDATE SET content = EXCLUDED.content, crdt = EXCLUDED.crdt",
                    snapshot.doc,
                    snapshot.version,
                    content,
                    snapshot.crdt,
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc

    @_in_a_task
    async def list_documents(self) -> list[DocumentInfo]:
        """Every document with at least one op or snapshot, sorted by id (code point order)."""
        pool = self._require_pool()
        try:
            rows = await pool.fetch("SELECT doc, head, updated FROM documents ORDER BY doc")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc
        return [DocumentInfo(row["doc"], row["head"], row["updated"]) for row in rows]

    # -- helpers ----------------------------------------------------------------

    async def _fetchval(self, sql: str, *args: object) -> Any:
        pool = self._require_pool()
        try:
            return await pool.fetchval(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc

    @property
    def pool(self) -> asyncpg.Pool:
        """The open connection pool, for the other tables of this schema (the webhook outbox)."""
        return self._require_pool()

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the store is not open: call open() first")
        return self._pool


async def _check_fence(conn: asyncpg.Connection, docs: list[str], fence: Mapping[str, int]) -> None:
    """Raise ``FencedError`` unless every one of ``docs`` is held at its ``fence`` epoch.

    ``FOR SHARE`` makes a concurrent acquisition (an ``UPDATE`` of the row) wait
    for this transaction, so an epoch checked here stays current until commit.
    """
    missing = [doc for doc in docs if doc not in fence]
    if missing:
        raise ValueError(f"a fenced commit needs an epoch for every document; none for {missing}")
    rows = await conn.fetch(_LEASE_EPOCHS, sorted(fence))
    stale = stale_epochs(fence, {row["doc"]: row["epoch"] for row in rows})
    if stale:
        raise FencedError(f"the lease of {', '.join(stale)} is held at a newer epoch", docs=stale)


async def _get_ops(
    conn: asyncpg.Connection, doc: str, from_version: int, to_version: int | None
) -> list[OpRecord]:
    if to_version is None:
        rows = await conn.fetch(
            f"SELECT {_OP_COLUMNS} FROM ops WHERE doc = $1 AND version > $2 ORDER BY version",
            doc,
            from_version,
        )
    else:
        rows = await conn.fetch(
            f"SELECT {_OP_COLUMNS} FROM ops WHERE doc = $1 AND version > $2 AND version <= $3 "
            "ORDER BY version",
            doc,
            from_version,
            to_version,
        )
    return [
        OpRecord(doc, version, decode_delta(op), client_id, seq, user, at, crdt)
        for version, op, client_id, seq, user, at, crdt in rows
    ]


async def _migrate(conn: asyncpg.Connection, schema: str | None) -> tuple[str, ...]:
    """Apply pending migrations in one transaction under an advisory lock; return their names.

    The transaction-scoped advisory lock makes a second process opening at the
    same time wait, then find nothing pending.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        if schema is not None:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version integer PRIMARY KEY, name text NOT NULL, "
            "applied timestamptz NOT NULL DEFAULT now())"
        )
        applied = {
            row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")
        }
        todo = pending(load_migrations("postgres"), applied)
        for migration in todo:
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
    return tuple(migration.name for migration in todo)

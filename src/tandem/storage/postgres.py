"""``PostgresStore``: the backend for several nodes (asyncpg, one pool).

A commit (``append``, ``commit``) is one round trip: one call of the
``tandem_commit`` function (migration 0009) on one of the store's own commit
connections, in the statement's implicit transaction. The function

1. with a fence (the owner of documents under a lease, ``storage/leases.py``),
   share-locks the documents' lease rows and checks their epochs; a stale one
   rolls everything back and the store raises ``FencedError``;
2. locks every document's head row, creating missing ones, in document-id
   order (``INSERT … ON CONFLICT DO UPDATE … RETURNING head``: the conflict
   arm row-locks the newest committed version, so a second writer — another
   task, connection or process — blocks here until the first commits, then
   reads the new head). Sorting is what keeps two multi-document batches from
   deadlocking. If a batch does not continue every log it rolls back, and the
   store raises the same ``ConflictError`` as every backend
   (``batch.check_heads``, pure, on the heads the function found);
3. inserts all ops and advances all heads in one statement each, over arrays.

The commit is durable when the call returns under the server's
``synchronous_commit`` (``on`` by default; an operator who lowers it trades
away the ack-after-durable guarantee). The same steps as a client-side
transaction were five round trips (``BEGIN``, lock, insert, ``COMMIT`` and the
pool's reset of the connection on release; six fenced): each one a wake-up of
a backend and of the event loop, which on a busy machine is where a commit's
latency went (docs/performance.md, issue 26).

The commit connections are the store's own, not the pool's (whose release
costs a reset round trip): an idle one is reused, a new one opened when all are
busy (the group committer runs one commit at a time; an ``append`` from
elsewhere may run beside it), and one that failed or was cancelled is closed.
At most ``COMMIT_CONNECTIONS`` idle ones are kept.

The ``(doc, version)`` primary key and the ``(doc, client_id, seq)`` unique
index stay the last line of defence: a writer that somehow skipped the lock
gets ``ConflictError`` from them, never a gap or a duplicate.

``schema`` (optional) names the PostgreSQL schema to use, created if missing;
the pool and the commit connections pin it with ``search_path``. Tests use a
throwaway schema per test; a deployment can host several Tandems in one
database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
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

log = logging.getLogger("tandem.storage.postgres")

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

_COMMIT = "SELECT tandem_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
#: SQLSTATEs ``tandem_commit`` raises: a stale lease epoch, a batch that does not continue a log.
_FENCED = "TD001"
_NOT_AT_HEAD = "TD002"
#: Most idle commit connections kept open.
COMMIT_CONNECTIONS = 4

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
        #: The ``search_path`` every connection is opened with (the schema's).
        self._settings: dict[str, str] = {}
        #: Commit connections not in use (``_commit_connection``).
        self._idle: list[asyncpg.Connection] = []
        #: Commit connections in use.
        self._busy: set[asyncpg.Connection] = set()
        #: Names of the migrations the last ``open`` applied (empty when up to date).
        self.applied_on_open: tuple[str, ...] = ()

    # -- lifecycle --------------------------------------------------------------

    async def open(self) -> None:
        """Create the pool and apply pending migrations. Idempotent."""
        if self._pool is not None:
            return
        settings = {"search_path": f'"{self.schema}"'} if self.schema else {}
        self._settings = settings
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
        await self._warm_commit_connection()

    async def close(self) -> None:
        """Close the pool (waiting for connections in use). Idempotent."""
        pool, self._pool = self._pool, None
        connections, self._idle = [*self._idle, *self._busy], []
        self._busy = set()
        for conn in connections:
            with contextlib.suppress(Exception):  # closing: a broken one is dropped all the same
                await conn.close(timeout=10)
        if pool is not None:
            await pool.close()

    # -- Store ----------------------------------------------------------------

    @_in_a_task
    async def append(self, records: Sequence[OpRecord]) -> None:
        """Commit ``records`` in one transaction (see the module docstring)."""
        await self._append(records, None)

    @_in_a_task
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
        docs = [run.doc for run in runs]
        fenced_docs: list[str] | None = None
        epochs: list[int] | None = None
        if fence is not None:
            missing = [doc for doc in docs if doc not in fence]
            if missing:
                raise ValueError(
                    f"a fenced commit needs an epoch for every document; none for {missing}"
                )
            fenced_docs = sorted(fence)
            epochs = [fence[doc] for doc in fenced_docs]
        args = (
            docs,
            [run.first for run in runs],
            [run.last for run in runs],
            [run.updated for run in runs],
            min(run.updated for run in runs),
            fenced_docs,
            epochs,
            [r.doc for r in ops],
            [r.version for r in ops],
            [encode_delta(r.op).decode() for r in ops],
            [r.client_id for r in ops],
            [r.seq for r in ops],
            [r.user for r in ops],
            [r.time for r in ops],
            [r.crdt for r in ops],
        )
        conn = await self._commit_connection()
        healthy = False
        try:
            await conn.execute(_COMMIT, *args)
            healthy = True
        except asyncpg.UniqueViolationError as exc:
            healthy = True
            what = "a (client_id, seq) was already committed"
            if exc.constraint_name != "ops_client_seq":
                what = "conflict"
            raise ConflictError(f"{what}: {exc.detail or exc}") from exc
        except asyncpg.PostgresError as exc:
            healthy = True  # the server refused the call; the connection is fine
            if exc.sqlstate == _FENCED:
                assert fence is not None
                stale = stale_epochs(fence, _found(exc))
                raise FencedError(
                    f"the lease of {', '.join(stale)} is held at a newer epoch", docs=stale
                ) from exc
            if exc.sqlstate == _NOT_AT_HEAD:
                check_heads(runs, _found(exc))  # raises the ConflictError every backend raises
            raise StorageError(f"PostgreSQL error: {exc}") from exc
        except (OSError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc
        finally:
            self._release(conn, healthy)

    async def _warm_commit_connection(self) -> None:
        """Open the first commit connection now, its statement prepared and its function
        compiled (an empty commit writes nothing), so the first op does not wait for that."""
        try:
            conn = await self._commit_connection()
        except StorageError:
            await self.close()
            raise
        healthy = False
        try:
            await conn.execute(_COMMIT, [], [], [], [], 0.0, None, None, *[[]] * 8)
            healthy = True
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("PostgreSQL: warming the commit connection failed: %s", exc)
        finally:
            self._release(conn, healthy)

    async def _commit_connection(self) -> asyncpg.Connection:
        """An idle commit connection, or a new one when all are in use (``StorageError``
        when it cannot be opened)."""
        self._require_pool()
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                self._busy.add(conn)
                return conn
        try:
            conn = await asyncpg.connect(self.dsn, server_settings=self._settings)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"cannot connect to PostgreSQL: {exc}") from exc
        self._busy.add(conn)
        return conn

    def _release(self, conn: asyncpg.Connection, healthy: bool) -> None:
        """Give ``conn`` back, or close it when its state is unknown (a failure, a cancel)."""
        self._busy.discard(conn)
        if healthy and self._pool is not None and len(self._idle) < COMMIT_CONNECTIONS:
            self._idle.append(conn)
        else:
            conn.terminate()

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


def _found(exc: asyncpg.PostgresError) -> dict[str, int]:
    """The epochs or heads ``tandem_commit`` found, from its error's DETAIL."""
    found = json.loads(exc.detail or "{}")
    return dict(zip(found.get("docs") or [], found.get("values") or [], strict=True))


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

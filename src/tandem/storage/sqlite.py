"""``SQLiteStore``: the embedded default backend (one file, WAL, every commit fsync'd).

Why ``sqlite3`` on dedicated threads rather than aiosqlite: an append is
BEGIN IMMEDIATE, read the heads, insert the ops, COMMIT.
aiosqlite hands each of those calls to its thread and back (a queue put, a
future, a ``call_soon_threadsafe``), five or more event-loop round trips per
append, and its one shared connection would need an ``asyncio.Lock`` to stop
two coroutines' statements interleaving inside one transaction. Here the whole
append is one function run on the writer thread: one hop, and the
transaction cannot interleave with anything. Measured with the same schema,
pragmas and SQL (median ms per durable append, batches of 1/10/100
one-keystroke ops, ext4 on a 2-vCPU VM): aiosqlite 0.51/0.75/1.74, this
0.34/0.46/1.43 — the fixed cost per append is a third lower, which is what
matters for small group commits. ``bench/store_append.py`` measures this module.

Two threads, each with its own connection: a writer, which serialises every
write of this store, and a reader, which WAL lets run while the writer is
fsyncing. Several ``SQLiteStore`` objects (or processes) on one file are safe:
BEGIN IMMEDIATE takes SQLite's write lock, the others wait ``busy_timeout``,
then see the new head and get ``ConflictError``.

Durability: ``journal_mode=WAL``; when ``append`` returns, the batch is in the
WAL and the WAL is fsync'd, so it survives a power loss.

Commit on the loop, sync behind (``commit``, what the group committer uses):
a third connection, used only on the event loop, runs the append's
transaction right there with ``synchronous=NORMAL`` — no fsync, about 60 µs:
the transaction is committed (every reader sees it; a crash of this process
keeps it, the WAL being in the OS's page cache) — and hands the writer thread
one ``fdatasync`` of the WAL, which makes it, and every commit before it,
durable. Sessions broadcast an op once it is committed and acknowledge it once
it is synced, so other clients do not wait for the disk and an author is never
told an op is saved before it is on disk. Measured at 2,000 clients over 200
documents (one op per commit, docs/performance.md): the two thread hand-offs
and the fsync had been most of Tandem's latency there.

The sync starts ``sync_delay`` (5 ms by default) after the first commit that
needs it, so the commits of every document within that window share one
``fdatasync`` (a group commit across documents: at 400 ops/s over 200
documents each op was otherwise alone in its own, and each paid two thread
wake-ups, ~250 µs of CPU on the 2-vCPU VMs we measure on, for a ~45 µs
``fdatasync``). The sync runs on the writer thread: on the event loop it would
cost less CPU still, but every socket would wait for the disk while it runs,
and the p99 of every delivery showed it (docs/performance.md, item 13). While
a sync runs, the commits that follow share the next, which starts as soon as
it is done. The loop's connection never waits for a lock
(``busy_timeout=0``): if another connection holds the write lock (a snapshot
being saved, another process) the append goes to the writer thread, as
``append`` does, and is durable when it returns. It never checkpoints either
(``wal_autocheckpoint=0``): the writer thread does, after a sync, once the
loop's commits since the last checkpoint wrote about ``CHECKPOINT_AFTER_BYTES``
to the WAL (SQLite's own default is 1,000 pages); a checkpoint of a bigger
WAL holds the write lock longer, and loop commits meanwhile wait for it on
the writer thread. A failed ``fdatasync``
cannot be retried (the kernel may have dropped the pages it could not write):
the store then refuses every later call with ``StorageError`` (``/healthz``
reports it) until the process restarts and reads back what the disk holds.

Each thread is a ``ThreadWorker`` (a queue and one ``call_soon_threadsafe``
per call) rather than an executor: the executor's futures, locks and
semaphore cost more per append than the commit's own Python work. If the
awaiting task is cancelled, the write already on the thread still finishes
(it may commit); idempotent resubmits are how callers find out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from tandem.errors import ConflictError, StorageError
from tandem.settings import Settings
from tandem.storage.base import DocumentInfo, LoadedDocument, OpRecord, Snapshot
from tandem.storage.batch import DocumentRun, check_heads, plan_batch
from tandem.storage.codec import decode_delta, encode_delta
from tandem.storage.leases import refuse_fence
from tandem.storage.schema import load_migrations, pending, split_sqlite_script
from tandem.storage.worker import ThreadWorker

__all__ = ["SQLiteStore"]

log = logging.getLogger("tandem.storage.sqlite")

T = TypeVar("T")

#: How long a writer waits for another connection's write lock, milliseconds.
BUSY_TIMEOUT_MS = 10_000
#: WAL bytes the event loop's commits write between two checkpoints (an estimate).
CHECKPOINT_AFTER_BYTES = 4 << 20
#: Default longest wait, seconds, between a loop commit and the start of its sync.
SYNC_DELAY: float = Settings.sync_delay
#: What one commit writes besides its ops: the pages of the ops table and its
#: seq index it touches (4 KiB each, SQLite's default page).
_COMMIT_PAGES_BYTES = 2 * 4096

_OP_COLUMNS = 'version, op, client_id, seq, "user", time, crdt'
#: A document's head: its last op's version, a seek on the ops' primary key (a
#: head kept in a row of its own cost every commit one more WAL page).
_HEAD = "SELECT max(version) FROM ops WHERE doc = ?"
_INSERT_OP = (
    'INSERT INTO ops (doc, version, op, client_id, seq, "user", time, crdt) '
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
#: Lists a document, once: by its first op or its first snapshot.
_ADD_DOCUMENT = "INSERT INTO documents (doc, created) VALUES (?, ?) ON CONFLICT (doc) DO NOTHING"
#: Every document with its head and last commit time (its last op's), in id order.
_LIST_DOCUMENTS = (
    "SELECT doc, "
    "(SELECT max(version) FROM ops WHERE ops.doc = d.doc), "
    "(SELECT time FROM ops WHERE ops.doc = d.doc ORDER BY version DESC LIMIT 1), "
    "created FROM documents AS d ORDER BY doc"
)
_OpRow = tuple[str, int, str, str, int | None, str, float, bytes | None]


class SQLiteStore:
    """A ``Store`` in one SQLite file at ``path`` (created, with its schema, on ``open``)."""

    def __init__(self, path: str | os.PathLike[str], *, sync_delay: float = SYNC_DELAY) -> None:
        if str(path) in ("", ":memory:") or str(path).startswith("file:"):
            raise ValueError("SQLiteStore needs a file path; use MemoryStore for memory")
        if not sync_delay >= 0:
            raise ValueError("sync_delay must be a number of seconds, 0 or more")
        self.path = Path(path)
        #: Longest wait between a loop commit and the start of the sync it needs.
        self.sync_delay = sync_delay
        self._writer: ThreadWorker | None = None
        self._reader: ThreadWorker | None = None
        # Each connection is created, used and closed only on its own thread.
        self._write_conn: sqlite3.Connection | None = None
        self._read_conn: sqlite3.Connection | None = None
        #: Names of the migrations the last ``open`` applied (empty when up to date).
        self.applied_on_open: tuple[str, ...] = ()
        # Commit on the loop, sync behind (see the module docstring).
        self._loop_conn: sqlite3.Connection | None = None
        self._wal_fd: int | None = None
        self._sync_running: asyncio.Future[None] | None = None
        #: Completes once a sync that starts after the last loop commit has finished.
        self._sync_next: asyncio.Future[None] | None = None
        self._sync_timer: asyncio.TimerHandle | None = None
        self._wal_bytes_since_checkpoint = 0
        self._sync_error: StorageError | None = None

    # -- lifecycle --------------------------------------------------------------

    async def open(self) -> None:
        """Open the file (creating it), switch to WAL and apply pending migrations. Idempotent."""
        if self._writer is not None:
            return
        self._writer = ThreadWorker("tandem-sqlite-writer")
        self._reader = ThreadWorker("tandem-sqlite-reader")
        try:
            self.applied_on_open = await self._write(self._open_writer)
            await self._read(self._open_reader)
            self._open_loop_writer()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close both connections and stop their threads. Idempotent."""
        writer, reader = self._writer, self._reader
        if writer is None or reader is None:
            return
        try:
            while self._sync_next is not None or self._sync_running is not None:
                if self._sync_running is None:  # a commit still waiting for its sync: now
                    self._start_sync()
                if (running := self._sync_running) is not None:
                    await asyncio.wait([running])
            self._close_loop_writer()
            await reader.run(self._close_reader)
            await writer.run(self._close_writer)
        finally:
            self._writer = self._reader = None
            writer.stop()
            reader.stop()

    # -- Store ----------------------------------------------------------------

    async def append(self, records: Sequence[OpRecord]) -> None:
        """Commit ``records`` in one transaction, fsync'd before returning (see ``base.py``)."""
        sync = await self.commit(records)
        if sync is not None:
            await asyncio.shield(sync)

    async def commit(
        self, records: Sequence[OpRecord], fence: Mapping[str, int] | None = None
    ) -> asyncio.Future[None] | None:
        """Commit ``records`` in one transaction; the future completes once it is fsync'd.

        One process owns the file and every document in it: no leases, no ``fence``.
        """
        refuse_fence(fence)
        if self._sync_error is not None:
            raise self._sync_error
        runs = plan_batch(records)
        if not runs:
            return None
        rows: list[_OpRow] = [
            (
                r.doc,
                r.version,
                encode_delta(r.op).decode(),
                r.client_id,
                r.seq,
                r.user,
                r.time,
                r.crdt,
            )
            for run in runs
            for r in run.records
        ]
        conn = self._loop_conn
        if conn is not None:
            try:
                _append_with(conn, runs, rows)
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise _storage_error(exc) from exc
                # Another connection holds the write lock: wait for it on the thread.
            except sqlite3.Error as exc:
                raise _storage_error(exc) from exc
            else:
                written = sum(len(row[2]) + len(row[7] or b"") for row in rows)
                return self._sync_soon(written + _COMMIT_PAGES_BYTES)
        await self._write(lambda: _append_with(self._conn_w(), runs, rows))
        return None

    async def load(self, doc: str) -> LoadedDocument:
        """The newest snapshot of ``doc`` and every op after it, read in one transaction."""
        return await self._read(lambda: self._load(doc))

    async def head(self, doc: str) -> int:
        """The latest committed version of ``doc`` (0 if it has no ops)."""
        rows = await self._query(_HEAD, (doc,))
        return _version(rows[0][0])

    async def get_ops(
        self, doc: str, from_version: int, to_version: int | None = None
    ) -> list[OpRecord]:
        """Ops with ``from_version < version <= to_version``, in order (a primary-key scan)."""
        return await self._read(lambda: _get_ops(self._conn_r(), doc, from_version, to_version))

    async def find_seq(self, doc: str, client_id: str, seq: int) -> int | None:
        """The version at which ``(client_id, seq)`` was committed in ``doc``, if it was."""
        rows = await self._query(
            "SELECT version FROM ops WHERE doc = ? AND client_id = ? AND seq = ?",
            (doc, client_id, seq),
        )
        return int(rows[0][0]) if rows else None

    async def last_seq(self, doc: str, client_id: str) -> int | None:
        """The highest ``seq`` committed by ``client_id`` in ``doc`` (None if it has none)."""
        rows = await self._query(
            "SELECT max(seq) FROM ops WHERE doc = ? AND client_id = ? AND seq IS NOT NULL",
            (doc, client_id),
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store ``snapshot``, replacing one at the same version."""
        content = encode_delta(snapshot.content).decode()
        now = time.time()

        def save() -> None:
            conn = self._conn_w()
            with _transaction(conn):
                conn.execute(_ADD_DOCUMENT, (snapshot.doc, now))
                conn.execute(
                    "INSERT OR REPLACE INTO snapshots (doc, version, content, crdt) "
                    "VALUES (?, ?, ?, ?)",
                    (snapshot.doc, snapshot.version, content, snapshot.crdt),
                )

        await self._write(save)

    async def list_documents(self) -> list[DocumentInfo]:
        """Every document with at least one op or snapshot, sorted by id (code point order)."""
        rows = await self._query(_LIST_DOCUMENTS, ())
        return [
            DocumentInfo(str(doc), _version(head), float(created if updated is None else updated))
            for doc, head, updated, created in rows
        ]

    # -- for the other tables of this file (the webhook outbox) ---------------------

    async def run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` with the writer's connection (``synchronous=FULL``) on its thread."""
        return await self._write(lambda: fn(self._conn_w()))

    async def run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` with the reader's (query-only) connection on its thread."""
        return await self._read(lambda: fn(self._conn_r()))

    # -- on the writer thread -------------------------------------------------------

    def _open_writer(self) -> tuple[str, ...]:
        conn = _connect(self.path)
        self._write_conn = conn
        _use_wal(conn)
        return _migrate(conn)

    def _close_writer(self) -> None:
        if self._write_conn is not None:
            self._write_conn.close()
            self._write_conn = None

    def _sync(self, checkpoint: bool) -> None:
        assert self._wal_fd is not None
        os.fdatasync(self._wal_fd)
        if checkpoint:
            # FULL: waits for the write lock (loop commits meanwhile come here, behind
            # it), so every frame is copied and the next commit restarts the WAL.
            try:
                self._conn_w().execute("PRAGMA wal_checkpoint(FULL)")
            except sqlite3.Error as exc:  # retried after the next batch of commits
                log.warning("SQLite checkpoint failed: %s", exc)

    def _conn_w(self) -> sqlite3.Connection:
        if self._write_conn is None:
            raise RuntimeError("the store is not open: call open() first")
        return self._write_conn

    # -- on the reader thread -----------------------------------------------------

    def _open_reader(self) -> None:
        conn = _connect(self.path)
        conn.execute("PRAGMA query_only = ON")
        self._read_conn = conn

    def _close_reader(self) -> None:
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None

    def _load(self, doc: str) -> LoadedDocument:
        conn = self._conn_r()
        # One read transaction: the snapshot and the ops come from the same WAL snapshot.
        with _transaction(conn, "BEGIN"):
            row = conn.execute(
                "SELECT version, content, crdt FROM snapshots WHERE doc = ? "
                "ORDER BY version DESC LIMIT 1",
                (doc,),
            ).fetchone()
            snapshot = None
            after = 0
            if row is not None:
                after = int(row[0])
                crdt = bytes(row[2]) if row[2] is not None else None
                snapshot = Snapshot(doc, after, decode_delta(row[1]), crdt)
            ops = _get_ops(conn, doc, after, None)
        return LoadedDocument(doc=doc, snapshot=snapshot, ops=ops)

    def _conn_r(self) -> sqlite3.Connection:
        if self._read_conn is None:
            raise RuntimeError("the store is not open: call open() first")
        return self._read_conn

    # -- on the event loop ------------------------------------------------------------

    def _open_loop_writer(self) -> None:
        conn = _connect(self.path)
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                raise FileNotFoundError("not in WAL mode")
            wal = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            # No WAL to sync here (a filesystem without shared memory, say): every
            # append goes to the writer thread, durable when it returns.
            log.warning("SQLite commits on the writer thread only: %s", exc)
            conn.close()
            return
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA busy_timeout = 0")
        self._wal_fd, self._loop_conn = wal, conn

    def _close_loop_writer(self) -> None:
        # Closed first: the last connection to close checkpoints, and that must be
        # one that syncs (the writer's).
        if self._loop_conn is not None:
            self._loop_conn.close()
            self._loop_conn = None
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None

    def _sync_soon(self, written: int) -> asyncio.Future[None]:
        """The future of a sync that starts after this moment (shared by the commits before it)."""
        self._wal_bytes_since_checkpoint += written
        future = self._sync_next
        if future is None:
            loop = asyncio.get_running_loop()
            future = self._sync_next = loop.create_future()
            if self._sync_running is None:
                self._sync_timer = loop.call_later(self.sync_delay, self._start_sync)
        return future

    def _start_sync(self) -> None:
        """Hand every loop commit so far to one sync on the writer thread (which also
        checkpoints, when that is due)."""
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        future = self._sync_next
        if future is None or self._sync_running is not None:
            return  # nothing to sync, or the running sync starts the next when it is done
        self._sync_running, self._sync_next = future, None
        checkpoint = self._wal_bytes_since_checkpoint >= CHECKPOINT_AFTER_BYTES
        if checkpoint:
            self._wal_bytes_since_checkpoint = 0
        assert self._writer is not None
        self._writer.run(partial(self._sync, checkpoint)).add_done_callback(self._sync_done)

    def _sync_done(self, done: asyncio.Future[None]) -> None:
        future, self._sync_running = self._sync_running, None
        assert future is not None
        exc = None if done.cancelled() else done.exception()
        if exc is None:
            if not future.done():
                future.set_result(None)
            self._start_sync()  # the commits made while it ran: they waited long enough
            return
        log.critical("fsync of %s-wal failed, refusing every later write: %s", self.path, exc)
        self._sync_error = StorageError(f"the SQLite WAL could not be synced: {exc}")
        for waiting in (future, self._sync_next):
            if waiting is not None and not waiting.done():
                waiting.set_exception(self._sync_error)
        self._sync_next = None

    # -- dispatch ---------------------------------------------------------------

    async def _write(self, fn: Callable[[], T]) -> T:
        if self._sync_error is not None:
            raise self._sync_error
        return await self._run(self._writer, fn)

    async def _read(self, fn: Callable[[], T]) -> T:
        if self._sync_error is not None:
            raise self._sync_error  # what is on disk is unknown: restart to read it back
        return await self._run(self._reader, fn)

    async def _query(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        return await self._read(lambda: self._conn_r().execute(sql, params).fetchall())

    @staticmethod
    async def _run(worker: ThreadWorker | None, fn: Callable[[], T]) -> T:
        if worker is None:
            raise RuntimeError("the store is not open: call open() first")
        try:
            return await worker.run(fn)
        except sqlite3.Error as exc:
            raise _storage_error(exc) from exc


def _storage_error(exc: sqlite3.Error) -> StorageError:
    """What a store's caller is told about ``exc``."""
    if isinstance(exc, sqlite3.IntegrityError):
        if "UNIQUE" not in str(exc):  # a CHECK, e.g. a negative snapshot version
            return StorageError(f"SQLite refused the write: {exc}")
        # The only unique keys an append can hit after check_heads are the
        # primary key (another writer) and the (doc, client_id, seq) index.
        what = "a (client_id, seq) was already committed" if "seq" in str(exc) else "conflict"
        return ConflictError(f"{what}: {exc}")
    return StorageError(f"SQLite error: {exc}")


def _append_with(
    conn: sqlite3.Connection, runs: Sequence[DocumentRun], rows: Sequence[_OpRow]
) -> None:
    """One append: BEGIN IMMEDIATE, check the heads, insert the ops, COMMIT."""
    with _transaction(conn):
        heads = {run.doc: _version(conn.execute(_HEAD, (run.doc,)).fetchone()[0]) for run in runs}
        check_heads(runs, heads)
        conn.executemany(_INSERT_OP, rows)
        new = [(run.doc, run.records[0].time) for run in runs if heads[run.doc] == 0]
        if new:  # a document's first op lists it
            conn.executemany(_ADD_DOCUMENT, new)


def _version(found: int | None) -> int:
    """A ``max(version)`` as a head: 0 when the document has no ops."""
    return 0 if found is None else int(found)


def _get_ops(
    conn: sqlite3.Connection, doc: str, from_version: int, to_version: int | None
) -> list[OpRecord]:
    if to_version is None:
        cursor = conn.execute(
            f"SELECT {_OP_COLUMNS} FROM ops WHERE doc = ? AND version > ? ORDER BY version",
            (doc, from_version),
        )
    else:
        cursor = conn.execute(
            f"SELECT {_OP_COLUMNS} FROM ops WHERE doc = ? AND version > ? AND version <= ? "
            "ORDER BY version",
            (doc, from_version, to_version),
        )
    return [
        OpRecord(
            doc,
            int(version),
            decode_delta(op),
            client_id,
            seq,
            user,
            float(at),
            bytes(crdt) if crdt is not None else None,
        )
        for version, op, client_id, seq, user, at, crdt in cursor
    ]


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, and only ourselves.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class _transaction:
    """``with _transaction(conn):`` BEGIN (IMMEDIATE by default) … COMMIT, or ROLLBACK."""

    def __init__(self, conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> None:
        self._conn = conn
        self._begin = begin

    def __enter__(self) -> None:
        self._conn.execute(self._begin)

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is None:
            self._conn.execute("COMMIT")
        elif self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


def _busy(exc: sqlite3.Error) -> bool:
    """Did ``exc`` come from another connection holding a lock (SQLITE_BUSY and its kin)?"""
    return exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL mode, waiting out other connections that hold it.

    SQLite does not call the busy handler for this lock (two processes opening a
    new file at once would deadlock), so the wait is ours: up to ``BUSY_TIMEOUT_MS``.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _migrate(conn: sqlite3.Connection) -> tuple[str, ...]:
    """Apply pending migrations in one write transaction; return their names.

    The bookkeeping table is created and read under the write lock, so two
    processes opening a new file at once apply each migration exactly once.
    """
    with _transaction(conn):
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)"
        )
        applied = {int(v) for (v,) in conn.execute("SELECT version FROM schema_migrations")}
        todo = pending(load_migrations("sqlite"), applied)
        for migration in todo:
            for statement in split_sqlite_script(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
    return tuple(migration.name for migration in todo)

"""Storage: the ``Store`` contract, its backends, and choosing one by URL.

``open_store(url, data_dir)`` maps ``Settings.database_url`` to a backend:

==========================  ==============================================
``""``                      SQLite at ``data_dir/tandem.db`` (dir created)
``sqlite:///relative.db``   SQLite; four slashes for an absolute path
``memory://``               ``MemoryStore`` (tests, demos; nothing persists)
``postgresql://…``          ``PostgresStore`` (``postgres://`` too); ``?schema=NAME``
                            keeps Tandem's tables in that schema
==========================  ==============================================

The returned store is not open yet: call ``await store.open()``. This package
must not import the server, the document sessions or the bus.
"""

from __future__ import annotations

import weakref
from pathlib import Path

from tandem.storage.archive import Archive, Checkpoint, Label, MemoryArchive
from tandem.storage.archive_sql import PostgresArchive, SQLiteArchive
from tandem.storage.base import (
    DocumentInfo,
    LoadedDocument,
    OpRecord,
    Snapshot,
    StorageError,
    Store,
)
from tandem.storage.incarnations import IncarnationStore
from tandem.storage.incarnations_sql import PostgresIncarnations, SQLiteIncarnations
from tandem.storage.leases import Leases, LeaseState
from tandem.storage.leases_sql import PostgresLeases
from tandem.storage.memory import MemoryStore
from tandem.storage.observed import ObservedStore
from tandem.storage.outbox import Delivery, MemoryOutbox, Outbox
from tandem.storage.outbox_sql import PostgresOutbox, SQLiteOutbox
from tandem.storage.postgres import PostgresStore
from tandem.storage.revocations import RevocationStore
from tandem.storage.revocations_sql import PostgresRevocations, SQLiteRevocations
from tandem.storage.sqlite import SYNC_DELAY, SQLiteStore

__all__ = [
    "Archive",
    "Checkpoint",
    "Delivery",
    "DocumentInfo",
    "Label",
    "LeaseState",
    "Leases",
    "LoadedDocument",
    "MemoryArchive",
    "MemoryOutbox",
    "MemoryStore",
    "OpRecord",
    "Outbox",
    "PostgresStore",
    "SQLiteStore",
    "Snapshot",
    "StorageError",
    "Store",
    "migrate",
    "open_archive",
    "open_leases",
    "open_outbox",
    "open_incarnations",
    "open_revocations",
    "open_store",
]

#: File name of the embedded database inside ``data_dir``.
DEFAULT_SQLITE_FILE = "tandem.db"


def open_store(url: str, data_dir: Path, *, sync_delay: float = SYNC_DELAY) -> Store:
    """The (unopened) store for ``url``; see the table in the module docstring.

    ``sync_delay`` is the SQLite store's (``Settings.sync_delay``).

    Raises ``ValueError`` for a URL it does not understand.
    """
    if url == "":
        data_dir.mkdir(parents=True, exist_ok=True)
        return SQLiteStore(data_dir / DEFAULT_SQLITE_FILE, sync_delay=sync_delay)
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not path or path == ":memory:":
            raise ValueError("sqlite:/// needs a file path; use memory:// for an in-memory store")
        return SQLiteStore(Path(path), sync_delay=sync_delay)
    if url in ("memory://", "memory:"):
        return MemoryStore()
    if url.startswith(("postgresql://", "postgres://")):
        dsn, schema = _split_schema(url)
        return PostgresStore(dsn, schema=schema)
    scheme = url.split(":", 1)[0]
    raise ValueError(
        f"unsupported database URL scheme {scheme!r}: use sqlite:///path, "
        "postgresql://…, memory:// or leave it empty for SQLite in the data directory"
    )


def open_outbox(store: Store) -> Outbox:
    """The webhook outbox that lives beside ``store``'s data (``storage/outbox.py``).

    Raises ``TypeError`` for a store of another kind (an embedder's own ``Store``):
    webhooks then need an outbox passed in explicitly.
    """
    if isinstance(store, SQLiteStore):
        return SQLiteOutbox(store)
    if isinstance(store, PostgresStore):
        return PostgresOutbox(store)
    if isinstance(store, MemoryStore):
        return store.outbox
    raise TypeError(f"no webhook outbox for a {type(store).__name__}")


def open_revocations(store: Store) -> RevocationStore:
    """The revocation table beside ``store``'s data (``storage/revocations.py``)."""
    if isinstance(store, SQLiteStore):
        return SQLiteRevocations(store)
    if isinstance(store, PostgresStore):
        return PostgresRevocations(store)
    if isinstance(store, MemoryStore):
        return store.revocations
    raise TypeError(f"no revocation table for a {type(store).__name__}")


def open_incarnations(store: Store) -> IncarnationStore | None:
    """The document incarnations beside ``store``'s data (``storage/incarnations.py``).

    None for a store of another kind (an embedder's own ``Store``): its documents
    then have one incarnation each, ``LEGACY``, as before incarnations existed.
    """
    if isinstance(store, ObservedStore):
        return open_incarnations(store.inner)
    if isinstance(store, SQLiteStore):
        return SQLiteIncarnations(store)
    if isinstance(store, PostgresStore):
        return PostgresIncarnations(store)
    if isinstance(store, MemoryStore):
        return store.incarnations
    return None


def open_leases(store: Store) -> Leases | None:
    """The document leases beside ``store``'s data, or None when it needs none.

    PostgreSQL, which several nodes share, has ``PostgresLeases``; SQLite and
    the memory store have one process that owns every document, so no leases.
    """
    if isinstance(store, ObservedStore):
        return open_leases(store.inner)
    if isinstance(store, PostgresStore):
        return PostgresLeases(store)
    if isinstance(store, SQLiteStore | MemoryStore):
        return None
    raise TypeError(f"no document leases for a {type(store).__name__}")


_memory_archives: weakref.WeakKeyDictionary[MemoryStore, MemoryArchive] = (
    weakref.WeakKeyDictionary()
)


def open_archive(store: Store) -> Archive:
    """The history archive that lives beside ``store``'s data (``storage/archive.py``).

    Raises ``TypeError`` for a store of another kind (an embedder's own ``Store``).
    """
    if isinstance(store, SQLiteStore):
        return SQLiteArchive(store)
    if isinstance(store, PostgresStore):
        return PostgresArchive(store)
    if isinstance(store, MemoryStore):
        archive = _memory_archives.get(store)
        if archive is None:
            archive = _memory_archives[store] = MemoryArchive(store)
        return archive
    raise TypeError(f"no history archive for a {type(store).__name__}")


def _split_schema(url: str) -> tuple[str, str | None]:
    """Take Tandem's own ``schema=NAME`` query parameter out of a PostgreSQL URL."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for key, value in query if key == "schema"), None)
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


async def migrate(url: str, data_dir: Path) -> list[str]:
    """Bring the database at ``url`` to the current schema; return the migrations applied.

    For a future ``tandem migrate`` command: opening a store migrates it, so
    this opens one, reports what that did, and closes it.
    """
    store = open_store(url, data_dir)
    await store.open()
    try:
        return list(getattr(store, "applied_on_open", ()))
    finally:
        await store.close()

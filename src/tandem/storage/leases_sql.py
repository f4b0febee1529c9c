"""``PostgresLeases``: document leases in the ``document_leases`` table.

Each method is one statement, in its own implicit transaction, so no lease
row stays locked across a round trip to the node: a node frozen (SIGSTOP, a
frozen VM) between two of its statements holds no lease row, and neither does
a frozen owner's commit (one call of ``tandem_commit``, ``storage/postgres.py``).
An acquisition that finds the lease held reads the holder with a second
statement. Every expiry is ``now() + ttl`` on the database server; the
``remaining`` seconds each returns are measured on that same clock. An
acquisition waits for the row's lock (a commit in flight share-locks it) at
most ``ttl`` seconds, then fails with ``StorageError`` instead of hanging behind
a transaction that never ends (an operator's open session). An acquisition
draws its epoch from the ``document_lease_epochs`` sequence while it holds the
row lock, so one document's epochs strictly grow and no epoch is ever issued
twice — not even after the row is deleted with its document
(``storage/document_admin.py``). The contract and its rules are in
``storage/leases.py``; the commit's epoch check is in ``storage/postgres.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg  # type: ignore[import-untyped]

from tandem.errors import StorageError
from tandem.storage.leases import LeaseState
from tandem.storage.postgres import PostgresStore

__all__ = ["PostgresLeases"]

#: Seconds to expiry on the database's clock; a released lease (``-infinity``) gives -inf.
_REMAINING = (
    "CASE WHEN isfinite(expires) THEN extract(epoch FROM expires - now())::float8 "
    "ELSE '-Infinity'::float8 END AS remaining"
)

_ACQUIRE = f"""
INSERT INTO document_leases AS l (doc, owner, epoch, expires)
VALUES ($1, $2, nextval('document_lease_epochs'), now() + make_interval(secs => $3))
ON CONFLICT (doc) DO UPDATE
    SET owner = EXCLUDED.owner, epoch = nextval('document_lease_epochs'),
        expires = EXCLUDED.expires
    WHERE l.expires <= now() OR l.owner = EXCLUDED.owner
RETURNING doc, owner, epoch, {_REMAINING}
"""

_HOLDER = f"SELECT doc, owner, epoch, {_REMAINING} FROM document_leases WHERE doc = $1"

_RENEW = f"""
UPDATE document_leases SET expires = now() + make_interval(secs => $4)
WHERE doc = $1 AND owner = $2 AND epoch = $3 AND expires > now()
RETURNING doc, owner, epoch, {_REMAINING}
"""

_RENEW_MANY = f"""
UPDATE document_leases AS l SET expires = now() + make_interval(secs => $4)
FROM unnest($1::text[], $2::bigint[]) AS held(doc, epoch)
WHERE l.doc = held.doc AND l.epoch = held.epoch AND l.owner = $3 AND l.expires > now()
RETURNING l.doc, l.owner, l.epoch, {_REMAINING.replace("expires", "l.expires")}
"""

_RELEASE = """
UPDATE document_leases SET expires = '-infinity'
WHERE doc = $1 AND owner = $2 AND epoch = $3
"""


class PostgresLeases:
    """The ``Leases`` of a ``PostgresStore`` (shares its pool)."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def acquire(self, doc: str, node: str, ttl: float) -> LeaseState:
        _check_ttl(ttl)
        try:
            async with self._store.pool.acquire() as conn:
                row = await conn.fetchrow(_ACQUIRE, doc, node, ttl, timeout=ttl)
                if row is None:
                    row = await conn.fetchrow(_HOLDER, doc)
        except TimeoutError as exc:
            raise StorageError(
                f"the lease row of {doc!r} stayed locked for {ttl:g} s; see the runbook"
            ) from exc
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc
        return _state(row)

    async def renew(self, doc: str, node: str, epoch: int, ttl: float) -> LeaseState | None:
        _check_ttl(ttl)
        row = await self._run("fetchrow", _RENEW, doc, node, epoch, ttl)
        return None if row is None else _state(row)

    async def renew_many(
        self, held: Sequence[tuple[str, int]], node: str, ttl: float
    ) -> dict[str, LeaseState]:
        _check_ttl(ttl)
        if not held:
            return {}
        docs = [doc for doc, _ in held]
        epochs = [epoch for _, epoch in held]
        rows = await self._run("fetch", _RENEW_MANY, docs, epochs, node, ttl)
        assert isinstance(rows, list)
        return {row["doc"]: _state(row) for row in rows}

    async def release(self, doc: str, node: str, epoch: int) -> bool:
        status = await self._run("execute", _RELEASE, doc, node, epoch)
        return bool(status == "UPDATE 1")

    async def holder(self, doc: str) -> LeaseState | None:
        row = await self._run("fetchrow", _HOLDER, doc)
        return None if row is None else _state(row)

    async def _run(self, method: str, sql: str, *args: object) -> object:
        try:
            return await getattr(self._store.pool, method)(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc


def _check_ttl(ttl: float) -> None:
    if not ttl > 0:
        raise ValueError(f"a lease ttl must be positive, got {ttl}")


def _state(row: asyncpg.Record) -> LeaseState:
    return LeaseState(row["doc"], row["owner"], row["epoch"], float(row["remaining"]))

"""Fixtures for the contract suites: each interface runs one suite against every backend.

Store (``test_store.py``): ``store`` is an open store on fresh storage, once per
backend; ``make_store`` makes further, unopened store objects over the *same*
storage (the same MemoryStore, SQLite file or PostgreSQL schema), for reopen
and second-writer tests. PostgreSQL is found at ``TANDEM_TEST_POSTGRES_DSN`` or
127.0.0.1:5432/test; when it is unreachable the postgres cases skip, or fail
when ``CI=true``.
"""

from __future__ import annotations

import getpass
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from tandem.storage import MemoryStore, PostgresStore, SQLiteStore, Store

# -- Store ----------------------------------------------------------------------

STORE_BACKENDS = ("memory", "sqlite", "postgres")

#: Set to point the suite at another server; otherwise these are tried in order.
POSTGRES_DSN_ENV = "TANDEM_TEST_POSTGRES_DSN"
_POSTGRES_CANDIDATES = (
    "postgresql://postgres@127.0.0.1:5432/test",
    f"postgresql://{getpass.getuser()}@127.0.0.1:5432/test",
)
_postgres_probe: dict[str, str] = {}


async def _postgres_dsn() -> str:
    """A DSN that connects, or fail (CI=true) / skip with the reason."""
    if "dsn" not in _postgres_probe and "error" not in _postgres_probe:
        configured = os.environ.get(POSTGRES_DSN_ENV)
        errors: list[str] = []
        for dsn in (configured,) if configured else _POSTGRES_CANDIDATES:
            try:
                conn = await asyncpg.connect(dsn, timeout=5)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                errors.append(f"{dsn}: {type(exc).__name__}: {exc}")
                continue
            await conn.close()
            _postgres_probe["dsn"] = dsn
            break
        else:
            _postgres_probe["error"] = "; ".join(errors)
    if "dsn" in _postgres_probe:
        return _postgres_probe["dsn"]
    message = (
        f"PostgreSQL is unreachable ({_postgres_probe['error']}); "
        f"start it or set {POSTGRES_DSN_ENV}"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(params=STORE_BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> str:
    """The backend under test: ``memory``, ``sqlite`` or ``postgres``."""
    return str(request.param)


@pytest.fixture
async def make_store(store_backend: str, tmp_path: Path) -> AsyncIterator[Callable[[], Store]]:
    """Make unopened stores over one fresh, isolated storage; closes them all afterwards."""
    made: list[Store] = []
    schema: str | None = None
    dsn = ""
    if store_backend == "memory":
        shared = MemoryStore()

        def build() -> Store:
            return shared

    elif store_backend == "sqlite":

        def build() -> Store:
            return SQLiteStore(tmp_path / "tandem.db")

    else:
        dsn = await _postgres_dsn()
        schema = f"t_{uuid.uuid4().hex}"

        def build() -> Store:
            return PostgresStore(dsn, schema=schema, max_size=4)

    def tracked() -> Store:
        store = build()
        made.append(store)
        return store

    try:
        yield tracked
    finally:
        for store in made:
            await store.close()
        if schema is not None:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()


@pytest.fixture
async def store(make_store: Callable[[], Store]) -> AsyncIterator[Store]:
    """An open store on fresh storage, for every backend in ``STORE_BACKENDS``."""
    opened = make_store()
    await opened.open()
    yield opened

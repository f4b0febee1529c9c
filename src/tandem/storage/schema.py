"""The migrations shipped in ``storage/migrations/<dialect>/NNNN_name.sql``.

Owns finding and ordering them, deciding which are pending, and splitting a
SQLite script into statements. Applying them (with locks and the
``schema_migrations`` bookkeeping) is the backends' job; this module does no
database I/O and must not import asyncio or drivers.

Rules for migration files: named ``NNNN_description.sql`` with versions 1, 2, 3…
without gaps; never edited once released (add a new file instead); each one is
applied in a single transaction together with its ``schema_migrations`` row.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass
from importlib import resources
from typing import Literal

__all__ = ["Dialect", "Migration", "load_migrations", "pending", "split_sqlite_script"]

Dialect = Literal["sqlite", "postgres"]

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration script: ``version`` orders them, ``name`` is the file stem."""

    version: int
    name: str
    sql: str


def load_migrations(dialect: Dialect) -> list[Migration]:
    """Every shipped migration for ``dialect``, in version order.

    Raises ``RuntimeError`` if the package ships a misnamed file or a gap,
    which is a packaging bug.
    """
    folder = resources.files("tandem.storage").joinpath("migrations", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if match is None:
            raise RuntimeError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        found.append(
            Migration(int(match[1]), entry.name.removesuffix(".sql"), entry.read_text("utf-8"))
        )
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations must be numbered 1, 2, 3…; found {versions}")
    return found


def pending(migrations: Collection[Migration], applied: Collection[int]) -> list[Migration]:
    """The migrations not yet in ``applied``, in order.

    Raises ``RuntimeError`` if the database has a version this package does
    not know: it was migrated by a newer Tandem, and running older code against
    it is not safe.
    """
    known = {migration.version for migration in migrations}
    unknown = sorted(set(applied) - known)
    if unknown:
        raise RuntimeError(
            f"the database has schema migrations {unknown} that this version of Tandem "
            "does not know; upgrade Tandem"
        )
    return sorted(
        (migration for migration in migrations if migration.version not in applied),
        key=lambda migration: migration.version,
    )


def split_sqlite_script(script: str) -> list[str]:
    """Split ``script`` into complete statements (``executescript`` would commit).

    Uses SQLite's own tokenizer (``sqlite3.complete_statement``), so semicolons
    in strings, comments and trigger bodies are handled as SQLite does.
    """
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if _has_code(current):
                statements.append(current.strip())
            current = ""
    if _has_code(current):
        raise ValueError(f"incomplete SQL statement at the end of the script: {current.strip()!r}")
    return statements


def _has_code(text: str) -> bool:
    """Whether ``text`` holds more than whitespace and ``--`` comments."""
    return any(line.split("--", 1)[0].strip() for line in text.splitlines())

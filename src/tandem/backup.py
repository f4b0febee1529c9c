"""Export, import and back up documents: ``tandem export``, ``tandem import``, ``tandem backup``.

**Export format** (JSON Lines, UTF-8, one JSON object a line; ``FORMAT`` = 1)::

    {"type": "tandem-export", "format": 1, "tandem": "0.1.0", "exported": 1765000000.0}
    {"type": "document", "doc": "notes", "version": 212, "oldest": 0}
    {"type": "op", "doc": "notes", "version": 1, "op": [{"insert": "H"}], "client_id": "c1",
     "seq": 1, "user": "ada", "time": 1765000000.0, "crdt": null}
    … every op of the document, in version order …
    {"type": "snapshot", "doc": "notes", "version": 200, "content": [{"insert": "…"}],
     "crdt": "base64…"}
    {"type": "end", "documents": 1, "ops": 212}

Each document brings its whole op log (so history, authorship and idempotency
survive) and its newest snapshot (so loading it stays fast). CRDT state is
base64. ``end`` makes a truncated file detectable. Ops are read and written in
pages of ``PAGE`` (memory stays constant whatever the sizes).

**Import** appends each document's ops to the configured store in pages, then
saves its snapshot. A document that already has ops there is skipped and
reported, never merged into. A document whose history was compacted
(``oldest`` > 0: its ops up to that version are gone, see ``tandem.history``)
is exported as it is but skipped on import, and reported: a store's log starts
at version 1, so it cannot be rebuilt there yet. Import into an empty store or with the nodes
stopped: it writes to the store directly.

**Backup** (SQLite only) copies the live database with SQLite's online backup
API: one consistent instant, while the server keeps writing; the copy is then
checked with ``PRAGMA integrity_check``. The copy holds no incarnations, so
restoring it starts a new incarnation of every document. For PostgreSQL use ``pg_dump``
(docs/runbook.md, "Backup and restore").

The command line (``tandem.cli``) only parses arguments and calls ``export``,
``import_`` and ``backup`` here; ``tandem docs export|import`` reuses them, and
``tandem docs renew`` calls ``renew``.
"""

from __future__ import annotations

import base64
import glob
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO, Any

import orjson

from tandem import __version__
from tandem.ot.delta import Delta
from tandem.storage import DEFAULT_SQLITE_FILE, open_incarnations, open_store
from tandem.storage.base import OpRecord, Snapshot, Store
from tandem.storage.incarnations_sql import renew_sqlite

__all__ = ["FORMAT", "PAGE", "ImportReport", "backup", "export", "import_", "sqlite_path"]

FORMAT = 1
PAGE = 1000


class ExportFormatError(ValueError):
    """The file is not a Tandem export this version can read (the message says where)."""


@dataclass
class ImportReport:
    documents: int = 0
    ops: int = 0
    skipped: list[str] = field(default_factory=list)
    #: Documents whose history was compacted: their log cannot start at version 1.
    compacted: list[str] = field(default_factory=list)


# -- export ---------------------------------------------------------------------------


async def export_lines(store: Store, pattern: str = "*") -> AsyncIterator[bytes]:
    """The export of every document matching ``pattern``, line by line."""
    documents = [d for d in await store.list_documents() if fnmatchcase(d.doc, pattern)]
    yield _line(
        {"type": "tandem-export", "format": FORMAT, "tandem": __version__, "exported": time.time()}
    )
    ops = 0
    for info in documents:
        head = await store.head(info.doc)
        pages = _pages(store, info.doc, head)
        first: list[OpRecord] = await anext(pages, [])
        # ``oldest``: the versions up to it were compacted away (tandem.history).
        oldest = first[0].version - 1 if first else head
        yield _line({"type": "document", "doc": info.doc, "version": head, "oldest": oldest})
        if first:
            for record in first:
                yield _line(_op_json(record))
            ops += len(first)
        async for page in pages:
            for record in page:
                yield _line(_op_json(record))
            ops += len(page)
        snapshot = (await store.load(info.doc)).snapshot
        if snapshot is not None and snapshot.version <= head:
            yield _line(
                {
                    "type": "snapshot",
                    "doc": info.doc,
                    "version": snapshot.version,
                    "content": snapshot.content.to_json(),
                    "crdt": _b64(snapshot.crdt),
                }
            )
    yield _line({"type": "end", "documents": len(documents), "ops": ops})


async def _pages(store: Store, doc: str, head: int) -> AsyncIterator[list[OpRecord]]:
    """The ops of ``doc`` up to ``head`` in pages of at most ``PAGE`` (none empty)."""
    after = 0
    while after < head:
        upto = min(after + PAGE, head)
        page = await store.get_ops(doc, after, upto)
        after = page[-1].version if page else upto  # a compacted range reads empty
        if page:
            yield page


async def export(
    url: str,
    data_dir: Path,
    out: IO[bytes],
    pattern: str = "*",
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Write the export of ``pattern``'s documents to ``out``; returns (documents, ops)."""
    store = open_store(url, data_dir)
    await store.open()
    try:
        last: dict[str, Any] = {}
        async for line in export_lines(store, pattern):
            out.write(line)
            if line.startswith(b'{"type":"document"'):
                if progress is not None:
                    progress(1)
            elif line.startswith(b'{"type":"end"'):
                last = orjson.loads(line)
        return int(last["documents"]), int(last["ops"])
    finally:
        await store.close()


async def count_documents(url: str, data_dir: Path, pattern: str = "*") -> int:
    store = open_store(url, data_dir)
    await store.open()
    try:
        return sum(1 for d in await store.list_documents() if fnmatchcase(d.doc, pattern))
    finally:
        await store.close()


# -- import ---------------------------------------------------------------------------


async def import_(
    url: str, data_dir: Path, lines: Iterable[bytes], progress: Callable[[int], None] | None = None
) -> ImportReport:
    """Load an export into the store at ``url``; see the module docstring."""
    store = open_store(url, data_dir)
    await store.open()
    incarnations = open_incarnations(store)
    report = ImportReport()
    try:
        numbered = enumerate(lines, start=1)
        header = _parse(next(numbered, (1, b"")))
        if header.get("type") != "tandem-export" or header.get("format") != FORMAT:
            raise ExportFormatError(f"line 1: not a Tandem export of format {FORMAT}")
        doc: str | None = None
        skip = False
        page: list[OpRecord] = []
        ended = False
        for number, raw in numbered:
            item = _parse((number, raw))
            kind = item.get("type")
            if kind in ("document", "end") and page:
                await store.append(page)
                page = []
            if kind == "document":
                doc = str(item["doc"])
                if int(item.get("oldest", 0)) > 0:
                    # A store's log starts at version 1: a compacted one cannot be rebuilt.
                    skip = True
                    report.compacted.append(doc)
                elif await store.head(doc) > 0:
                    skip = True
                    report.skipped.append(doc)
                else:
                    skip = False
                    report.documents += 1
                    if incarnations is not None:  # an imported history: a new incarnation
                        await incarnations.renew(glob.escape(doc))
                if progress is not None:
                    progress(1)
            elif kind == "op" and not skip:
                _check_doc(item, doc, number)
                page.append(_op_record(item))
                report.ops += 1
                if len(page) >= PAGE:
                    await store.append(page)
                    page = []
            elif kind == "snapshot" and not skip:
                _check_doc(item, doc, number)
                if page:
                    await store.append(page)
                    page = []
                await store.save_snapshot(
                    Snapshot(
                        str(item["doc"]),
                        int(item["version"]),
                        Delta.from_json(item["content"]),
                        _unb64(item.get("crdt")),
                    )
                )
            elif kind == "end":
                ended = True
                break
            elif kind not in ("op", "snapshot"):
                raise ExportFormatError(f"line {number}: unknown type {kind!r}")
        if not ended:
            raise ExportFormatError("the file ends without its 'end' line: truncated?")
        return report
    finally:
        await store.close()


def _check_doc(item: dict[str, Any], doc: str | None, number: int) -> None:
    if item.get("doc") != doc:
        raise ExportFormatError(
            f"line {number}: {item.get('type')} of {item.get('doc')!r} outside its document {doc!r}"
        )


# -- backup ---------------------------------------------------------------------------


def sqlite_path(url: str, data_dir: Path) -> Path | None:
    """The SQLite file of a database URL (None for PostgreSQL and memory://)."""
    if url == "":
        return data_dir / DEFAULT_SQLITE_FILE
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return None


def backup(url: str, data_dir: Path, target: Path) -> int:
    """Copy the live SQLite database to ``target`` (online, consistent); returns its bytes.

    Raises ``ValueError`` for a store that is not SQLite, ``FileNotFoundError``
    when there is no database yet, ``FileExistsError`` rather than overwrite.
    """
    source_path = sqlite_path(url, data_dir)
    if source_path is None:
        raise ValueError(
            "tandem backup copies SQLite databases; for PostgreSQL use pg_dump "
            "(docs/runbook.md, 'Backup and restore')"
        )
    if not source_path.is_file():
        raise FileNotFoundError(f"no database at {source_path}")
    if target.exists():
        raise FileExistsError(f"{target} exists; choose a new file")
    partial = target.with_name(target.name + ".partial")
    with (
        _closing(sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)) as source,
        _closing(sqlite3.connect(partial)) as copy,
    ):
        source.execute("PRAGMA busy_timeout = 10000")
        # In steps of 1024 pages, so the server's writer is never held up for long.
        source.backup(copy, pages=1024)
        result = copy.execute("PRAGMA integrity_check").fetchone()
        if result is None or result[0] != "ok":
            raise sqlite3.DatabaseError(f"the copy failed its integrity check: {result}")
        # Restoring the copy starts a new incarnation of every document in it
        # (docs/protocol.md, "Incarnations"): its clients' versions count in the
        # live history, not in this one.
        if copy.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'document_incarnations'"
        ).fetchone():
            renew_sqlite(copy)
        copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
    partial.rename(target)
    return target.stat().st_size


@contextmanager
def _closing(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    try:
        yield conn
    finally:
        conn.close()


# -- lines ----------------------------------------------------------------------------


def _line(item: dict[str, Any]) -> bytes:
    return orjson.dumps(item) + b"\n"


def _parse(numbered: tuple[int, bytes]) -> dict[str, Any]:
    number, raw = numbered
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ExportFormatError(f"line {number}: not JSON ({exc})") from None
    if not isinstance(item, dict):
        raise ExportFormatError(f"line {number}: not a JSON object")
    return item


def _op_json(record: OpRecord) -> dict[str, Any]:
    return {
        "type": "op",
        "doc": record.doc,
        "version": record.version,
        "op": record.op.to_json(),
        "client_id": record.client_id,
        "seq": record.seq,
        "user": record.user,
        "time": record.time,
        "crdt": _b64(record.crdt),
    }


def _op_record(item: dict[str, Any]) -> OpRecord:
    seq = item.get("seq")
    return OpRecord(
        doc=str(item["doc"]),
        version=int(item["version"]),
        op=Delta.from_json(item["op"]),
        client_id=str(item["client_id"]),
        seq=None if seq is None else int(seq),
        user=str(item["user"]),
        time=float(item["time"]),
        crdt=_unb64(item.get("crdt")),
    )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes | None:
    return None if text is None else base64.b64decode(str(text), validate=True)


# -- the commands ---------------------------------------------------------------------


@contextmanager
def _progress(what: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr when it is a terminal (else nothing), erased at the end.

    Hand-written rather than rich's: with rich installed, httpx imports its own
    command line (rich, click, pygments) whenever it is imported, which cost
    every ``tandem serve`` start-up ~170 ms.
    """
    if not sys.stderr.isatty():
        yield lambda advance: None
        return
    done = 0
    shown = -1.0

    def advance(step: int) -> None:
        nonlocal done, shown
        done += step
        now = time.monotonic()
        if now - shown < 0.1 and done < total:
            return  # at most ten redraws a second
        shown = now
        share = done / total if total else 1.0
        bar = "█" * int(share * 30)
        sys.stderr.write(f"\r{what} {bar:<30} {done:,}/{total:,} {share:4.0%}")
        sys.stderr.flush()

    try:
        yield advance
    finally:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


def run_export(url: str, data_dir: Path, out: Path | None, pattern: str) -> int:
    """``tandem export``: to ``out``, or stdout when None; a summary on stderr."""
    import asyncio

    total = asyncio.run(count_documents(url, data_dir, pattern))
    with _progress("exporting documents", total) as advance:
        if out is None:
            documents, ops = asyncio.run(export(url, data_dir, sys.stdout.buffer, pattern, advance))
        else:
            with out.open("xb") as file:
                documents, ops = asyncio.run(export(url, data_dir, file, pattern, advance))
    print(f"exported {documents} documents, {ops} ops", file=sys.stderr)
    return 0


def run_import(url: str, data_dir: Path, source: Path) -> int:
    """``tandem import``: 0 when every document was imported, 1 if some were skipped."""
    import asyncio

    with source.open("rb") as file:
        total = sum(1 for line in file if line.startswith(b'{"type":"document"'))
    with source.open("rb") as file, _progress("importing documents", total) as advance:
        try:
            report = asyncio.run(import_(url, data_dir, file, advance))
        except ExportFormatError as error:
            print(f"tandem import: {source}: {error}", file=sys.stderr)
            return 2
    print(f"imported {report.documents} documents, {report.ops} ops", file=sys.stderr)
    for docs, why in (
        (report.skipped, "that already exist"),
        (report.compacted, "whose history was compacted (not importable yet)"),
    ):
        if docs:
            names = ", ".join(docs[:10]) + (" …" if len(docs) > 10 else "")
            print(f"skipped {len(docs)} {why}: {names}", file=sys.stderr)
    return 1 if report.skipped or report.compacted else 0


async def renew(url: str, data_dir: Path, pattern: str = "*") -> int:
    """Start a new incarnation of every document matching ``pattern``; how many had one."""
    store = open_store(url, data_dir)
    await store.open()
    try:
        incarnations = open_incarnations(store)
        return 0 if incarnations is None else await incarnations.renew(pattern)
    finally:
        await store.close()


def run_renew(url: str, data_dir: Path, pattern: str) -> int:
    """``tandem docs renew``: after a restore with other tools (pg_restore, a file copy)."""
    import asyncio

    count = asyncio.run(renew(url, data_dir, pattern))
    print(
        f"renewed {count} documents: each starts a new incarnation when next opened",
        file=sys.stderr,
    )
    return 0


def run_backup(url: str, data_dir: Path, target: Path) -> int:
    """``tandem backup``: the online SQLite copy, or a clear refusal."""
    try:
        size = backup(url, data_dir, target)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"tandem backup: {error}", file=sys.stderr)
        return 2
    print(f"backed up to {target} ({size:,} bytes, integrity ok)", file=sys.stderr)
    return 0

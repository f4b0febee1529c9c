"""``tandem export`` / ``tandem import`` round trips, and ``tandem backup`` of a live SQLite.

A real server writes a real session (OT ops with idempotency ids, a snapshot,
a Yjs update with its CRDT bytes) into SQLite or PostgreSQL; the CLI exports
it, imports it into a fresh store of the same kind, and the two stores must
hold the same documents, op for op and snapshot for snapshot; a server on the
imported store then serves the same text.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tandem.ot.delta import Delta
from tandem.storage import open_store
from tandem.storage.base import OpRecord, Snapshot

from .harness import (
    POSTGRES_URL,
    RawClient,
    ServerProcess,
    doc_state,
    drop_schema,
    require_services,
    token,
)
from .yclient import YClient

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def tandem(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tandem", *map(str, args)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(source URL, fresh destination URL) of one backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/source.db", f"sqlite:///{tmp_path}/restored.db"
        return
    require_services("postgres")
    tag = secrets.token_hex(4)
    yield f"{POSTGRES_URL}?schema=t_bks{tag}", f"{POSTGRES_URL}?schema=t_bkd{tag}"
    drop_schema(f"bks{tag}")
    drop_schema(f"bkd{tag}")


async def write_session(server: ServerProcess) -> None:
    """130 ops in one document (past a snapshot at 100), one in another, and a Yjs edit."""
    a = await RawClient.connect(server, f"token={token('ada')}&doc=notes/plan&client=ca")
    await a.expect("snapshot")
    for seq in range(1, 131):
        await a.send({"type": "insert", "pos": 0, "text": "é😀"[seq % 2], "seq": seq})
        await a.expect("ack")
    b = await RawClient.connect(server, f"token={token('bob')}&doc=other&client=cb")
    await b.expect("snapshot")
    await b.send({"type": "insert", "pos": 0, "text": "hello", "seq": 1})
    await b.expect("ack")
    yjs = YClient(31)
    await yjs.connect(f"{server.ws_url}/yjs/other?token={token('yuki')}")
    await asyncio.wait_for(yjs.synced.wait(), 10)
    yjs.insert(5, " from yjs", {"bold": True})
    await b.expect("op")
    await yjs.disconnect()
    await a.close()
    await b.close()


async def contents(url: str, data: Path) -> dict[str, object]:
    """Everything a store holds, in comparable form."""
    store = open_store(url, data)
    await store.open()
    try:
        held: dict[str, object] = {}
        for info in await store.list_documents():
            loaded = await store.load(info.doc)
            held[info.doc] = (
                info.version,
                await store.get_ops(info.doc, 0),
                loaded.snapshot,
            )
        return held
    finally:
        await store.close()


async def test_export_then_import_into_a_fresh_store_gives_the_same_documents(
    stores: tuple[str, str], tmp_path: Path
) -> None:
    source, destination = stores
    server = ServerProcess(tmp_path / "data", env={"TANDEM_DATABASE_URL": source})
    server.start()
    try:
        await write_session(server)
        texts = {doc: (await doc_state(server, doc))["text"] for doc in ("notes/plan", "other")}
    finally:
        server.stop()
    assert "from yjs" in texts["other"]

    export = tmp_path / "all.jsonl"
    done = tandem("export", "--database", source, "--out", export)
    assert done.returncode == 0, done.stderr
    assert "exported 2 documents, 132 ops" in done.stderr
    lines = [orjson.loads(line) for line in export.read_bytes().splitlines()]
    assert lines[0]["type"] == "tandem-export" and lines[-1] == {
        "type": "end",
        "documents": 2,
        "ops": 132,
    }
    assert any(line["type"] == "snapshot" and line["doc"] == "notes/plan" for line in lines)
    assert any(line["type"] == "op" and line["crdt"] for line in lines)  # the Yjs update

    done = tandem("import", "--database", destination, export)
    assert done.returncode == 0, done.stderr
    assert "imported 2 documents, 132 ops" in done.stderr
    original = await contents(source, tmp_path)
    restored = await contents(destination, tmp_path)
    assert restored == original and set(restored) == {"notes/plan", "other"}

    server = ServerProcess(tmp_path / "data", env={"TANDEM_DATABASE_URL": destination})
    server.start()
    try:
        for doc, text in texts.items():
            assert (await doc_state(server, doc))["text"] == text
    finally:
        server.stop()

    # A second import changes nothing and says which documents it skipped.
    done = tandem("import", "--database", destination, export)
    assert done.returncode == 1 and "skipped 2 that already exist" in done.stderr
    assert await contents(destination, tmp_path) == original

    # A glob exports only what matches.
    done = tandem("export", "--database", source, "--docs", "notes/*")
    assert done.returncode == 0, done.stderr
    docs = {orjson.loads(line).get("doc") for line in done.stdout.splitlines()} - {None}
    assert docs == {"notes/plan"}


async def test_a_truncated_or_foreign_file_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    truncated = tmp_path / "cut.jsonl"
    truncated.write_bytes(
        b'{"type":"tandem-export","format":1}\n{"type":"document","doc":"d","version":1}\n'
    )
    done = tandem("import", "--database", url, truncated)
    assert done.returncode == 2 and "truncated" in done.stderr
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"hello": 1}\n')
    done = tandem("import", "--database", url, foreign)
    assert done.returncode == 2 and "not a Tandem export" in done.stderr


async def test_backup_copies_a_live_sqlite_database_consistently(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data)
    server.start()
    try:
        await write_session(server)
        copy = tmp_path / "backup.db"
        done = tandem("backup", "--data", data, copy)  # while the server runs
        assert done.returncode == 0, done.stderr
        assert "integrity ok" in done.stderr
        again = tandem("backup", "--data", data, copy)
        assert again.returncode == 2 and "exists" in again.stderr
        heads = {doc: (await doc_state(server, doc))["v"] for doc in ("notes/plan", "other")}
    finally:
        server.stop()
    with sqlite3.connect(copy) as conn:
        stored = dict(conn.execute("SELECT doc, MAX(version) FROM ops GROUP BY doc").fetchall())
    assert stored == heads
    refused = tandem("backup", "--database", f"{POSTGRES_URL}?schema=x", tmp_path / "pg.db")
    assert refused.returncode == 2 and "pg_dump" in refused.stderr


async def test_a_compacted_document_is_exported_but_not_imported_and_is_named(
    tmp_path: Path,
) -> None:
    """Retention deletes a document's oldest ops; a store's log cannot start past 1."""
    source = f"sqlite:///{tmp_path}/source.db"
    store = open_store(source, tmp_path)
    await store.open()
    try:
        for doc in ("kept", "cut"):
            await store.append(
                [
                    OpRecord(doc, v, Delta().insert("x"), "c", v, "ada", float(v))
                    for v in range(1, 1501)
                ]
            )
        await store.save_snapshot(Snapshot("cut", 1200, Delta().insert("x" * 1200)))
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "source.db") as conn:  # what compaction leaves
        conn.execute("DELETE FROM ops WHERE doc = 'cut' AND version <= 1200")

    export = tmp_path / "out.jsonl"
    done = tandem("export", "--database", source, "--out", export)
    assert done.returncode == 0, done.stderr
    documents = {
        line["doc"]: line
        for line in map(orjson.loads, export.read_bytes().splitlines())
        if line["type"] == "document"
    }
    assert documents["cut"]["oldest"] == 1200 and documents["kept"]["oldest"] == 0
    assert "exported 2 documents, 1800 ops" in done.stderr

    destination = f"sqlite:///{tmp_path}/restored.db"
    done = tandem("import", "--database", destination, export)
    assert done.returncode == 1
    assert "skipped 1 whose history was compacted (not importable yet): cut" in done.stderr
    restored = await contents(destination, tmp_path)
    assert set(restored) == {"kept"}
    assert restored["kept"] == (await contents(source, tmp_path))["kept"]

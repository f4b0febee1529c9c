"""The admin API and ``tandem docs`` on a real server, over SQLite and over PostgreSQL.

Deleting a document closes its clients (OT and Yjs alike) with
``ERR_DOC_DELETED``, not a hang; the document can be recreated afresh; erasing
leaves no row naming it in any table, checked by querying the database itself.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

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

DOC = "admin/doc"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


class Backend:
    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.tag = uuid.uuid4().hex[:10]
        env = {}
        if kind == "postgres":
            env["TANDEM_DATABASE_URL"] = f"{POSTGRES_URL}?schema=t_{self.tag}"
        self.server = ServerProcess(folder / "data", env=env)

    async def rows(self, doc: str) -> dict[str, int]:
        """Rows naming ``doc`` in every table that has a ``doc`` column, straight from the DB."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.server.data_dir / "tandem.db")
            try:
                tables = [
                    r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                ]
                counts = {}
                for table in tables:
                    columns = [c[1] for c in conn.execute(f"PRAGMA table_info({table})")]
                    if "doc" in columns:
                        query = f"SELECT count(*) FROM {table} WHERE doc = ?"
                        counts[table] = conn.execute(query, (doc,)).fetchone()[0]
                return counts
            finally:
                conn.close()
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            tables = await conn.fetch(
                "SELECT table_name FROM information_schema.columns "
                "WHERE table_schema = $1 AND column_name = 'doc'",
                f"t_{self.tag}",
            )
            return {
                row["table_name"]: await conn.fetchval(
                    f'SELECT count(*) FROM "t_{self.tag}"."{row["table_name"]}" WHERE doc = $1', doc
                )
                for row in tables
            }
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "postgres":
        require_services("postgres")
    chosen = Backend(str(request.param), tmp_path)
    chosen.server.start()
    try:
        yield chosen
    finally:
        chosen.server.stop()
        if chosen.kind == "postgres":
            drop_schema(chosen.tag)


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {token('root', admin=True)}"}


async def type_text(server: ServerProcess, doc: str, text: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{server.url}/api/docs/{doc}/ops",
            json={"type": "insert", "pos": 0, "text": text},
            headers={"Authorization": f"Bearer {token('ada')}"},
        )
        assert response.status_code == 200, response.text


async def test_delete_closes_clients_and_erase_leaves_no_row(backend: Backend) -> None:
    server = backend.server
    await type_text(server, DOC, "secret")
    ot = await RawClient.connect(server, f"token={token('ada')}&doc={DOC}")
    await ot.expect("snapshot")
    yjs = YClient(7)
    await yjs.connect(f"{server.ws_url}/yjs/{DOC}?token={token('bob')}")
    await asyncio.wait_for(yjs.synced.wait(), 5)
    async with httpx.AsyncClient(headers=admin_headers()) as http:
        listed = (await http.get(f"{server.url}/api/admin/docs")).json()
        assert listed == [
            {"doc": DOC, "version": 1, "updated": listed[0]["updated"], "size": 6, "clients": 2}
        ]
        shown = (await http.get(f"{server.url}/api/admin/docs/{DOC}")).json()
        assert (shown["size"], shown["clients"]) == (6, 2)
        refused = await http.delete(
            f"{server.url}/api/admin/docs/{DOC}",
            headers={"Authorization": f"Bearer {token('ada')}"},
        )
        assert refused.status_code == 403
        deleted = await http.delete(f"{server.url}/api/admin/docs/{DOC}")
        assert deleted.status_code == 200, deleted.text

    error = await ot.expect("error", timeout=5)
    assert error["code"] == "ERR_DOC_DELETED"
    await asyncio.wait_for(ot.ws.wait_closed(), 5)
    assert ot.ws.close_code == 4410
    await asyncio.wait_for(_closed(yjs), 5)
    assert yjs.closed == (4410, "ERR_DOC_DELETED")

    rows = await backend.rows(DOC)
    assert rows.pop("document_tombstones") == 1  # deleting leaves its marker, nothing else
    assert set(rows.values()) == {0}, rows

    # Recreated afresh: a new history from version 1, none of the old content.
    await type_text(server, DOC, "new")
    state = await doc_state(server, DOC)
    assert (state["v"], state["text"]) == (1, "new")

    async with httpx.AsyncClient(headers=admin_headers()) as http:
        erased = await http.delete(f"{server.url}/api/admin/docs/{DOC}", params={"erase": True})
        assert erased.status_code == 200, erased.text
    rows = await backend.rows(DOC)
    assert rows and set(rows.values()) == {0}, rows  # no row of it in any table
    if backend.kind == "sqlite":  # nor its bytes in free pages or the WAL
        files = sorted(server.data_dir.glob("tandem.db*"))
        assert files and not any(b"secret" in f.read_bytes() for f in files)
    await yjs.disconnect()


async def _closed(client: YClient) -> None:
    while client.closed is None:
        await asyncio.sleep(0.01)


async def test_copy_rename_and_the_cli(backend: Backend) -> None:
    server = backend.server
    await type_text(server, "a/one", "hello")
    env = {"TANDEM_ADMIN_TOKEN": token("root", admin=True)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        where = ["--url", server.url, "--data", str(server.data_dir)]
        return subprocess.run(
            [sys.executable, "-m", "tandem", "docs", *where, *args],
            capture_output=True,
            text=True,
            env={**server.env, **env},
            timeout=60,
        )

    copied = cli("copy", "a/one", "a/two")
    assert copied.returncode == 0, copied.stderr
    assert (await doc_state(server, "a/two"))["text"] == "hello"
    again = cli("copy", "a/one", "a/two")
    assert again.returncode == 1 and "ERR_CONFLICT" in again.stderr
    assert cli("rename", "a/two", "b/three").returncode == 0
    listed = json.loads(cli("list").stdout)
    assert [d["doc"] for d in listed] == ["a/one", "b/three"]
    shown = json.loads(cli("show", "b/three").stdout)
    assert (shown["version"], shown["size"]) == (1, 5)
    assert cli("delete", "b/three", "--erase").returncode == 0
    assert set((await backend.rows("b/three")).values()) == {0}
    assert [d["doc"] for d in json.loads(cli("list").stdout)] == ["a/one"]

    # export, erase, import: the document comes back as it was.
    dump = server.data_dir.parent / "a.jsonl"
    exported = cli("export", "--docs", "a/*", "--out", str(dump))
    assert exported.returncode == 0, exported.stderr
    assert cli("delete", "a/one", "--erase").returncode == 0
    imported = cli("import", str(dump))
    assert imported.returncode == 0, imported.stderr
    assert (await doc_state(server, "a/one"))["text"] == "hello"

"""A restore from a backup while Python, JavaScript and Yjs clients hold newer versions
and offline edits.

A real ``tandem serve`` reaches version 50 and is backed up (SQLite: ``tandem
backup``; PostgreSQL: ``pg_dump``); two Python clients take the document to
version 80 while a JavaScript client (``client/src`` in node, ``jsclient.mjs``)
and a Yjs client (pycrdt, ``yclient.py``) follow; the node stops and all four
keep typing offline; the backup is restored (SQLite: the copy put in place;
PostgreSQL: ``pg_restore`` then ``tandem docs renew``) and the node restarted;
a fifth client takes the restored document past the others' version (to 90)
before they return.

The restored document is a new incarnation (docs/protocol.md, "Incarnations"):

* the Python clients re-join with version 80, its incarnation and its
  fingerprint; the JavaScript client with version 80 and its incarnation only
  (it sends no fingerprint, so the incarnation alone must send it a snapshot:
  a catch-up of versions 81-90 of the new history would be applied to its old
  text). Each gets a snapshot naming the new incarnation and carries its
  offline edits over onto it;
* the Yjs client's state holds the old history's items: the server closes it
  with 4409 ``ERR_STALE_INCARNATION`` and merges none of it; the application
  starts a fresh Y.Doc and applies its offline edit to it as text.

All converge on the restored document plus everyone's new edits: the edits
acknowledged after the backup are gone (the restore took them), and each
offline edit is there exactly once.

A second test renews a document with ``tandem docs renew`` and checks the
Hocuspocus endpoint: a provider holding the old incarnation has that document
closed (``ERR_STALE_INCARNATION``), nothing of its state is merged, its other
document on the socket carries on, and a fresh provider syncs.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import pytest

from tandem.client import DocumentHandle, TandemClient
from tandem.ot.delta import Delete, Delta, Insert, Retain
from tandem.ot.diff import diff
from tandem.ot.transform import transform

from .harness import (
    POSTGRES_URL,
    RawClient,
    ServerProcess,
    doc_state,
    drop_schema,
    require_services,
    token,
    until,
)
from .hpclient import HPClient
from .test_hocuspocus import text_of
from .test_python_client import ALPHABET, converged
from .yclient import YClient

pytestmark = pytest.mark.integration

DOC = "restored"
HERE = Path(__file__).parent


@dataclass
class Deployment:
    """How a node is configured, backed up and restored (nodes stopped)."""

    env: dict[str, str]
    backup: Callable[[], None]
    restore: Callable[[], None]


def tandem(*args: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tandem", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(params=["sqlite", "postgres"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    data, copy = tmp_path / "data", tmp_path / "backup"
    if request.param == "sqlite":

        def restore_file() -> None:
            for suffix in ("", "-wal", "-shm"):
                (data / f"tandem.db{suffix}").unlink(missing_ok=True)
            shutil.copy(copy, data / "tandem.db")  # the runbook's restore: the copy put in place

        yield Deployment(
            {}, lambda: tandem("backup", str(copy), "--data", str(data), env={}), restore_file
        )
        return
    require_services("postgres")
    tag = "rst" + secrets.token_hex(4)
    env = {"TANDEM_DATABASE_URL": f"{POSTGRES_URL}?schema=t_{tag}"}

    def dump() -> None:
        pg = ["pg_dump", "--format=custom", f"--schema=t_{tag}", f"--file={copy}", POSTGRES_URL]
        subprocess.run(pg, check=True, capture_output=True)

    def restore_dump() -> None:
        pg = ["pg_restore", "--clean", "--if-exists", f"--dbname={POSTGRES_URL}", str(copy)]
        subprocess.run(pg, check=True, capture_output=True)
        # A restore with PostgreSQL's tools brings the old incarnation rows back.
        tandem("docs", "--data", str(data), "renew", env=env)

    try:
        yield Deployment(env, dump, restore_dump)
    finally:
        drop_schema(tag)


class JSClient:
    """``jsclient.mjs``: the JavaScript client in node, one JSON command a line."""

    def __init__(self, process: asyncio.subprocess.Process, log: IO[bytes]) -> None:
        self.process = process
        self.log = log

    @classmethod
    async def start(cls, url: str, credential: str, doc: str, log: Path) -> JSClient:
        if shutil.which("node") is None:
            if os.environ.get("CI") == "true":
                pytest.fail("CI=true and no node for the JavaScript client", pytrace=False)
            pytest.skip("no node for the JavaScript client")
        out = log.open("ab")
        process = await asyncio.create_subprocess_exec(
            "node",
            str(HERE / "jsclient.mjs"),
            url,
            credential,
            doc,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=out,
        )
        return cls(process, out)

    async def do(self, command: str, timeout: float = 30, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(orjson.dumps({"cmd": command, **fields}) + b"\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        answer: dict[str, Any] = orjson.loads(line)
        assert answer["ok"], answer
        return answer

    async def close(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.log.close()


async def type_synced(handle: DocumentHandle, keys: list[str]) -> None:
    """One version per key: type it at the end and wait for its ack."""
    for key in keys:
        handle.insert(len(handle.text), key)
        await handle.synced(20)


async def y_synced(client: YClient, url: str) -> None:
    await client.connect(url)
    await asyncio.wait_for(client.synced.wait(), 20)


def apply_text(client: YClient, change: Delta) -> None:
    """Apply a plain-text delta to a Yjs client's text, as an editor binding would."""
    index = 0
    for op in change.ops:
        if isinstance(op, Retain):
            index += op.count
        elif isinstance(op, Insert):
            assert isinstance(op.text, str)
            client.insert(index, op.text)
            index += len(op.text)
        elif isinstance(op, Delete):
            client.delete(index, op.count)


async def resync(stale: YClient, synced_text: str, url: str, client_id: int) -> YClient:
    """What the application does on 4409: a fresh Y.Doc, then its own edits as text."""
    fresh = YClient(client_id)
    await y_synced(fresh, url)
    mine = diff(synced_text, stale.plain())
    theirs = diff(synced_text, fresh.plain())
    apply_text(fresh, transform(mine, theirs, "right"))
    return fresh


def test_clients_ahead_of_a_restore_converge_and_keep_their_offline_edits(
    deployment: Deployment, tmp_path: Path
) -> None:
    server = ServerProcess(tmp_path / "data", env=deployment.env)
    url = f"{server.ws_url}/collab"
    yjs_url = f"{server.ws_url}/yjs/{DOC}?token={token('yuki')}"
    keys = iter(ALPHABET)
    before = [next(keys) for _ in range(50)]
    after = [next(keys) for _ in range(30)]
    later = [next(keys) for _ in range(40)]
    offline = ["OFFLINE-ONE ", " OFFLINE-TWO", " OFFLINE-JS", "OFFLINE-Y "]

    async def scenario() -> None:
        gate = asyncio.Event()
        gate.set()
        credential = token("typist")

        async def gated() -> str:
            await gate.wait()  # while closed, the returning Python clients stay away
            return credential

        server.start()
        ahead = [TandemClient(url, gated, max_backoff=0.2) for _ in range(2)]
        js = await JSClient.start(url, token("jess"), DOC, tmp_path / "js.log")
        y = YClient(4242)
        try:
            one, two = [await client.join(DOC, timeout=20) for client in ahead]
            await js.do("ready")
            await type_synced(one, before)
            assert one.version == 50
            deployment.backup()
            await type_synced(one, after[:15])
            await type_synced(two, after[15:])
            await converged([one, two])
            assert one.version == two.version == 80
            at_80 = one.text
            # Others' ops reach the JS client after their authors' acks: wait for them.
            assert (await js.do("at", v=80))["text"] == at_80
            await y_synced(y, yjs_url)
            assert y.plain() == at_80
            old_incarnation = (await js.do("state"))["incarnation"]
            assert old_incarnation and old_incarnation == one.incarnation

            gate.clear()
            await js.do("offline")
            await y.disconnect()
            server.stop()
            # The node is down: everyone keeps typing.
            one.insert(0, offline[0])
            two.insert(len(two.text), offline[1])
            await js.do("insert", index=40, text=offline[2])
            y.insert(10, offline[3])
            assert one.pending and two.pending

            deployment.restore()
            server.start()
            third = TandemClient(url, credential)
            try:
                late = await third.join(DOC, timeout=20)
                assert late.version == 50 and late.text == "".join(before)
                assert late.incarnation not in (None, old_incarnation)
                await type_synced(late, later)
                assert late.version == 90  # past the returning clients' version 80

                # The Yjs client's state is the old history: refused whole, not merged.
                await y.connect(yjs_url)
                await asyncio.wait_for(_closed(y), 20)
                assert y.closed == (4409, "ERR_STALE_INCARNATION")
                assert (await doc_state(server, DOC))["v"] == 90
                fresh = await resync(y, at_80, yjs_url, 4343)

                gate.set()
                await js.do("online")
                handles = [one, two, late]
                await converged(handles, timeout=30)
                await js.do("synced")
                for _ in range(200):
                    final = await doc_state(server, DOC)
                    texts = [h.text for h in handles] + [(await js.do("state"))["text"]]
                    if all(t == final["text"] for t in [*texts, fresh.plain()]):
                        break
                    await asyncio.sleep(0.1)
                js_state = await js.do("state")
                assert js_state["incarnation"] == late.incarnation != old_incarnation
                await fresh.disconnect()
            finally:
                await third.close()
        finally:
            for client in ahead:
                await client.close()
            await js.close()
            await y.disconnect()
            server.stop()
        text = final["text"]
        assert [*texts, fresh.plain()] == [text] * 5, "every client shows the server's text"
        assert all(text.count(edit) == 1 for edit in offline), text
        assert all(text.count(key) == 1 for key in before + later)
        assert not any(key in text for key in after), "acknowledged after the backup: restored away"
        rest = text
        for edit in offline:
            rest = rest.replace(edit, "")
        assert rest == "".join(before + later)

    asyncio.run(asyncio.wait_for(scenario(), 180))


async def _closed(client: YClient) -> None:
    while client.closed is None:
        await asyncio.sleep(0.02)


def test_a_hocuspocus_provider_of_a_renewed_document_is_refused_not_merged(
    tmp_path: Path,
) -> None:
    """``tandem docs renew`` (SQLite, node stopped): a Hocuspocus provider that held the
    old incarnation has that document closed with ``ERR_STALE_INCARNATION`` and none of its
    state is merged; another document on the same socket carries on."""
    server = ServerProcess(tmp_path / "data")

    async def scenario() -> None:
        server.start()
        try:
            ot = await RawClient.connect(server, f"token={token('otto')}&doc=hp-renewed")
            await ot.expect("snapshot", v=0)
            await ot.send({"type": "op", "v": 0, "seq": 1, "op": [{"insert": "old text"}]})
            await ot.expect("ack", v=1)
            await ot.close()
            held = HPClient()
            await held.connect(f"{server.ws_url}/hocuspocus")
            doc = await held.open("hp-renewed", token("hana"), 4101)
            await until(lambda: doc.synced and doc.plain() == "old text")
            await held.close()
        finally:
            server.stop()
        tandem("docs", "--data", str(server.data_dir), "renew", "hp-*", env={})
        server.start()
        try:
            client = HPClient()
            await client.connect(f"{server.ws_url}/hocuspocus")
            other = await client.open("other", token("hana"), 4102)
            await until(lambda: other.synced)
            old_state = doc.doc.get_update()  # the provider's Y.Doc from before, plus an edit
            stale = await client.open("hp-renewed", token("hana"), 4101, old_state)
            stale.text.insert(0, "offline ")
            await until(lambda: stale.closed is not None, timeout=20)
            assert stale.closed == "ERR_STALE_INCARNATION"
            assert text_of(await doc_state(server, "hp-renewed")) == "old text"  # nothing merged
            client.insert("other", 0, "still here")  # the socket and its other document live on
            await until(lambda: other.unsynced == 0 and other.statuses[-1:] == [True])
            assert text_of(await doc_state(server, "other")) == "still here"
            await client.close()
            again = HPClient()
            await again.connect(f"{server.ws_url}/hocuspocus")
            fresh = await again.open("hp-renewed", token("hana"), 4103)
            await until(lambda: fresh.synced and fresh.plain() == "old text")
            await again.close()
        finally:
            server.stop()

    asyncio.run(asyncio.wait_for(scenario(), 120))

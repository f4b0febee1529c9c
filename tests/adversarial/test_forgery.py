"""Yjs client-id forgery (issue 27, item 6), and token renewal that switches users (item 7).

Mallory, a writer of the same document, creates items under Bob's Yjs client
id at Bob's next clock, while Bob types. Unchecked, the server keeps
Mallory's items, Bob's concurrent edit vanishes on the server while his own
replica keeps it: a permanent divergence, attributed to Bob. The server binds
each client id to the user who first used it in the document and refuses the
forged update (close 4403, nothing applied); Bob's edit survives. The forged
update is built twice: with pycrdt, and with the npm ``yjs`` package.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets
from pycrdt import Doc, Text
from tests.integration.harness import ServerProcess, doc_state, token, until
from tests.integration.hpclient import auth_frame
from tests.integration.yclient import YClient

from tandem.merge import hocuspocus as hp
from tandem.merge import yproto

from .conftest import metric, start_server

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.alone]

ROOT = Path(__file__).resolve().parents[2]
BOB, MALLORY = 1111, 2222


def _url(server: ServerProcess, doc: str, who: str) -> str:
    return f"{server.ws_url}/yjs/{doc}?token={token(who, docs={'*': 'write'})}"


def forge_with_pycrdt(state: bytes, client: int, text: str) -> bytes:
    doc: Doc[Any] = Doc(client_id=client)
    doc.apply_update(state)
    before = doc.get_state()
    doc.get("content", type=Text).insert(0, text)
    return doc.get_update(before)


def forge_with_yjs(state: bytes, client: int, text: str) -> bytes:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is required (the npm yjs package forges the update)")
    result = subprocess.run(
        [node, str(Path(__file__).with_name("forge.mjs")), str(ROOT / "client" / "package.json")],
        input=json.dumps(
            {"state": base64.b64encode(state).decode(), "client": client, "text": text}
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return base64.b64decode(result.stdout)


@pytest.mark.parametrize("forge", [forge_with_pycrdt, forge_with_yjs], ids=["pycrdt", "yjs"])
async def test_a_forged_client_id_is_refused_and_the_honest_edit_survives(
    server: ServerProcess, forge: Callable[[bytes, int, str], bytes]
) -> None:
    bob = YClient(BOB)
    await bob.connect(_url(server, "shared", "bob"))
    await asyncio.wait_for(bob.synced.wait(), 10)
    bob.insert(0, "bob was here. ")
    await until(lambda: "bob was here" in _text(server, "shared"))

    mallory = YClient(MALLORY)
    await mallory.connect(_url(server, "shared", "mallory"))
    await asyncio.wait_for(mallory.synced.wait(), 10)
    # Longer than Bob's concurrent edit: whichever reaches the server first, the
    # forgery holds structs past every clock Bob has used, so it is always judged
    # (a forged range wholly inside clocks the server already has merges to nothing).
    forged = forge(mallory.doc.get_update(), BOB, "EVIL EVIL EVIL EVIL ")
    # Bob types at the same moment, at the very clock Mallory forged.
    bob.insert(len(bob.plain()), "and again.")
    assert mallory.ws is not None
    await mallory.ws.send(yproto.sync_update(forged))
    await until(lambda: mallory.closed is not None)
    assert mallory.closed is not None and mallory.closed[0] == 4403

    await until(lambda: "and again." in _text(server, "shared"))
    text = _text(server, "shared")
    assert "EVIL" not in text
    assert text == bob.plain() == "bob was here. and again."
    await bob.disconnect()


async def test_awareness_under_another_user_s_client_id_is_dropped(server: ServerProcess) -> None:
    bob = YClient(BOB)
    await bob.connect(_url(server, "aw", "bob"))
    await asyncio.wait_for(bob.synced.wait(), 10)
    await bob.set_awareness(1, {"user": {"name": "Bob"}})
    watcher = YClient(3333)
    await watcher.connect(_url(server, "aw", "walt"))
    await asyncio.wait_for(watcher.synced.wait(), 10)
    await until(lambda: BOB in watcher.awareness)

    mallory = YClient(MALLORY)
    await mallory.connect(_url(server, "aw", "mallory"))
    await asyncio.wait_for(mallory.synced.wait(), 10)
    assert mallory.ws is not None
    spoof = yproto.AwarenessEntry(BOB, 99, {"user": {"name": "Bob (spoofed)"}})
    await mallory.ws.send(yproto.awareness_message(yproto.encode_awareness([spoof])))
    huge = yproto.AwarenessEntry(MALLORY, 1, {"blob": "x" * 500_000})
    await mallory.ws.send(yproto.awareness_message(yproto.encode_awareness([huge])))
    await mallory.set_awareness(2, {"user": {"name": "Mallory"}})
    await until(lambda: MALLORY in watcher.awareness)
    assert watcher.awareness[BOB] == {"user": {"name": "Bob"}}
    assert watcher.awareness[MALLORY] == {"user": {"name": "Mallory"}}
    for client in (bob, watcher, mallory):
        await client.disconnect()


async def test_hocuspocus_renewal_with_another_user_s_token_is_refused(
    server: ServerProcess,
) -> None:
    async with websockets.connect(f"{server.ws_url}/hocuspocus", max_size=None) as ws:
        await ws.send(auth_frame("doc", token("reader", docs={"doc": "read"})))
        first = hp.parse(await _next_of(ws, hp.AUTH))
        assert b"readonly" in first.body
        await ws.send(auth_frame("doc", token("writer", docs={"doc": "write"})))
        denied = hp.parse(await _next_of(ws, hp.AUTH))
        assert b"ERR_FORBIDDEN" in denied.body
        # The document is closed for this socket: an update is not taken.
        doc: Doc[Any] = Doc(client_id=4444)
        doc.get("content", type=Text).insert(0, "upgraded?")
        await ws.send(hp.wrap("doc", yproto.sync_update(doc.get_update())))
        await asyncio.sleep(0.5)
    assert (await doc_state(server, "doc"))["text"] == ""


async def _next_of(ws: Any, kind: int) -> bytes:
    while True:
        frame = await asyncio.wait_for(ws.recv(), 10)
        if frame != hp.PING_FRAME and hp.parse(frame).kind == kind:
            return bytes(frame)


def _text(server: ServerProcess, doc: str) -> str:
    import httpx

    answer = httpx.get(
        f"{server.url}/api/docs/{doc}",
        headers={"Authorization": f"Bearer {token('admin')}"},
        timeout=10,
    )
    return str(answer.json()["text"])


async def test_client_id_bindings_outlive_the_document_being_unloaded(tmp_path: Path) -> None:
    """Bob's client id stays his after everyone left and the document was unloaded:
    a Yjs client keeps its id across reconnects, so a forger must not get it meanwhile."""
    server = start_server(tmp_path, document_idle_unload="0.5")
    try:
        bob = YClient(BOB)
        await bob.connect(_url(server, "kept", "bob"))
        await asyncio.wait_for(bob.synced.wait(), 10)
        bob.insert(0, "bob was here. ")
        await until(lambda: "bob was here" in _text(server, "kept"))
        await bob.disconnect()
        await until(lambda: metric(server, "tandem_open_documents") == 0, timeout=15)

        mallory = YClient(MALLORY)
        await mallory.connect(_url(server, "kept", "mallory"))
        await asyncio.wait_for(mallory.synced.wait(), 10)
        forged = forge_with_pycrdt(mallory.doc.get_update(), BOB, "EVIL ")
        assert mallory.ws is not None
        await mallory.ws.send(yproto.sync_update(forged))
        await until(lambda: mallory.closed is not None)
        assert mallory.closed is not None and mallory.closed[0] == 4403
        assert _text(server, "kept") == "bob was here. "
    finally:
        server.stop()

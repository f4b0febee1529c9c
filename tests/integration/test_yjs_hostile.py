"""Garbage on the ``/yjs/{doc}`` endpoint: each frame ends with a documented close code
(4400 for a malformed y-protocols frame), the document is unchanged, the server healthy,
and the OT clients of the same document carry on. Read-only Yjs clients cannot write."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import websockets

from tandem.merge import yproto

from .harness import RawClient, ServerProcess, doc_state, token

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def _varuint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


GARBAGE: dict[str, bytes | str] = {
    "empty": b"",
    "unknown message type": b"\x07\x00",
    "unknown sync step": b"\x00\x09\x00",
    "truncated varuint": b"\x00\x80",
    "varuint too long": b"\x00" + b"\xff" * 20,
    "length past the end": b"\x00\x02" + _varuint(1 << 30) + b"abc",
    "update that is not a Yjs update": yproto.sync_update(b"\xde\xad\xbe\xef" * 8),
    "sync step 2 of random bytes": yproto.sync_step2(bytes(range(256))),
    "awareness that is not JSON": b"\x01" + _varuint(20) + b"\x01\x05\x01\x03{{{" + b"\x00" * 12,
    "random bytes": bytes((i * 37 + 11) % 256 for i in range(300)),
    "a text frame": '{"type": "op"}',
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


async def _close_code(ws: Any) -> int | None:
    """Read until the server closes (or 2 s of silence: the frame was ignored)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 2.0)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None
    except TimeoutError:
        return None


@pytest.mark.parametrize("name", list(GARBAGE))
async def test_garbage_on_the_yjs_endpoint(server: ServerProcess, name: str) -> None:
    owner = await RawClient.connect(server, f"token={token('owner')}&doc=ydoc")
    await owner.expect("snapshot")
    await owner.send({"type": "insert", "pos": 0, "text": "steady"})
    await owner.expect("ack")
    try:
        before = await doc_state(server, "ydoc")
        url = f"{server.ws_url}/yjs/ydoc?token={token('mallory')}"
        async with websockets.connect(url, max_size=None) as ws:
            await ws.recv()  # SyncStep1 from the server
            await ws.send(GARBAGE[name])
            code = await _close_code(ws)
        assert await doc_state(server, "ydoc") == before
        await owner.send({"type": "insert", "pos": 0, "text": "!"})
        await owner.expect("ack")
        assert code in (None, 4400), f"{name}: closed with {code}"
    finally:
        await owner.close()


async def test_a_read_only_yjs_client_cannot_write(server: ServerProcess) -> None:
    import pycrdt

    owner = await RawClient.connect(server, f"token={token('owner')}&doc=yro")
    await owner.expect("snapshot")
    await owner.send({"type": "insert", "pos": 0, "text": "keep"})
    await owner.expect("ack")
    before = await doc_state(server, "yro")
    ydoc = pycrdt.Doc()
    text = ydoc.get("content", type=pycrdt.Text)
    with ydoc.transaction():
        text += "intruder"
    update = ydoc.get_update()
    url = f"{server.ws_url}/yjs/yro?token={token('reader', docs={'yro': 'read'})}"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()
        await ws.send(yproto.sync_update(update))
        await _close_code(ws)
    assert await doc_state(server, "yro") == before
    await owner.close()

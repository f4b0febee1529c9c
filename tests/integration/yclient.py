"""A minimal Yjs client for tests: a pycrdt Doc synced over ``/yjs/{doc}`` with y-protocols.

It behaves like y-websocket's provider: opens with SyncStep1 (plus its
awareness), answers the server's SyncStep1 with SyncStep2, applies incoming
updates, sends its own edits as Updates, and on reconnect re-syncs by state
vectors (so edits made offline are pushed then). Text offsets it takes are
code points; it converts to pycrdt's UTF-8 bytes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import websockets
from pycrdt import Doc, Text

from tandem.merge import yproto
from tandem.merge.translate import normalize_attributes, utf8_length
from tandem.ot.delta import Delta, Insert


class YClient:
    """One Yjs client; ``connect``/``disconnect`` any number of times."""

    def __init__(self, client_id: int) -> None:
        self.doc: Doc[Any] = Doc(client_id=client_id)
        self.text = self.doc.get("content", type=Text)
        self.ws: websockets.ClientConnection | None = None
        self.synced = asyncio.Event()
        self.changed = asyncio.Event()
        self.frames: list[yproto.Message] = []
        self.awareness: dict[int, object] = {}
        self._reader: asyncio.Task[None] | None = None
        self._remote = False
        self.doc.observe(self._on_update)
        self.closed: tuple[int, str] | None = None

    async def connect(self, url: str) -> None:
        self.synced.clear()
        self.closed = None
        self.ws = await websockets.connect(url, max_size=None)
        self._reader = asyncio.create_task(self._read())
        await self._send(yproto.sync_step1(self.doc.get_state()))  # may race a refusal

    async def disconnect(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader
        self.ws = None

    async def set_awareness(self, clock: int, state: object) -> None:
        entry = yproto.AwarenessEntry(self.doc.client_id, clock, state)
        assert self.ws is not None
        await self.ws.send(yproto.awareness_message(yproto.encode_awareness([entry])))

    def _on_update(self, event: Any) -> None:
        if self._remote or self.ws is None:
            return
        update = event.update
        if update != b"\x00\x00":
            asyncio.get_running_loop().create_task(self._send(yproto.sync_update(update)))

    async def _send(self, frame: bytes) -> None:
        if self.ws is not None:
            with contextlib.suppress(websockets.ConnectionClosed):
                await self.ws.send(frame)

    async def _read(self) -> None:
        assert self.ws is not None
        ws = self.ws
        try:
            async for frame in ws:
                assert isinstance(frame, bytes)
                message = yproto.parse(frame)
                self.frames.append(message)
                if message.kind == yproto.SYNC:
                    if message.sub == yproto.SYNC_STEP1:
                        await ws.send(yproto.sync_step2(self.doc.get_update(message.payload)))
                    else:
                        self._remote = True
                        try:
                            self.doc.apply_update(message.payload)
                        finally:
                            self._remote = False
                        if message.sub == yproto.SYNC_STEP2:
                            self.synced.set()
                        self.changed.set()
                elif message.kind == yproto.AWARENESS:
                    for entry in yproto.decode_awareness(message.payload):
                        if entry.state is None:
                            self.awareness.pop(entry.client, None)
                        else:
                            self.awareness[entry.client] = entry.state
                    self.changed.set()
        except websockets.ConnectionClosed:
            pass
        if ws.close_code is not None:
            self.closed = (ws.close_code, ws.close_reason or "")

    # -- editing in code points ----------------------------------------------------

    def plain(self) -> str:
        return str(self.text)

    def server_ids(self) -> list[int]:
        """The client ids in this doc other than its own (the server's replica, other peers)."""
        decoder = yproto.Decoder(self.doc.get_state())
        ids = []
        for _ in range(decoder.var_uint()):
            ids.append(decoder.var_uint())
            decoder.var_uint()  # its clock
        return sorted(client for client in ids if client != self.doc.client_id)

    def insert(self, index: int, text: str, attributes: dict[str, Any] | None = None) -> None:
        at = utf8_length(self.plain()[:index])
        self.text.insert(at, text, attributes or {})

    def delete(self, index: int, length: int) -> None:
        plain = self.plain()
        at = utf8_length(plain[:index])
        del self.text[at : at + utf8_length(plain[index : index + length])]

    def format(self, index: int, length: int, attributes: dict[str, Any]) -> None:
        plain = self.plain()
        at = utf8_length(plain[:index])
        self.text.format(at, at + utf8_length(plain[index : index + length]), attributes)

    def content(self) -> Delta:
        delta = Delta()
        for chunk, attributes in self.text.diff():
            delta.push(Insert(chunk, normalize_attributes(attributes)))
        return delta

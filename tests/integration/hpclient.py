"""A minimal Hocuspocus provider for tests: pycrdt Docs over ``/hocuspocus``, frames by hand.

Behaves like ``@hocuspocus/provider`` 4.x: per document it sends Auth (token +
provider version), then SyncStep1; it answers a SyncStep1 with SyncStep2,
applies SyncStep2/Update, sends its own edits as Updates and counts unsynced
changes the provider's way (reset to 1 at each sync, +1 per sent update, -1
per SyncStatus(1)). Every received frame is kept in ``frames`` for asserts.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import websockets
from pycrdt import Doc, Text

from tandem.merge import hocuspocus as hp
from tandem.merge import yproto
from tandem.merge.translate import utf8_length
from tandem.merge.yproto import Decoder, write_var_string, write_var_uint


def frame(key: str, kind: int, body: bytes = b"") -> bytes:
    """A raw Hocuspocus frame: routing key, type, body."""
    out = bytearray()
    write_var_string(out, key)
    write_var_uint(out, kind)
    return bytes(out) + body


def auth_frame(key: str, token: str) -> bytes:
    body = bytearray()
    write_var_uint(body, hp.AUTH_TOKEN)
    write_var_string(body, token)
    write_var_string(body, "4.8.0")
    return frame(key, hp.AUTH, bytes(body))


@dataclass
class HPDocument:
    key: str
    doc: Doc[Any]
    text: Text
    unsynced: int = 0
    synced: bool = False
    scope: str | None = None
    denied: list[str] = field(default_factory=list)
    statuses: list[bool] = field(default_factory=list)
    closed: str | None = None
    #: Stateless payloads (the provider's ``onStateless``).
    stateless: list[str] = field(default_factory=list)
    awareness: dict[int, object] = field(default_factory=dict)

    def plain(self) -> str:
        return str(self.text)


class HPClient:
    """One socket, any number of documents."""

    def __init__(self) -> None:
        self.ws: websockets.ClientConnection | None = None
        self.docs: dict[str, HPDocument] = {}
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._remote = False

    async def connect(self, url: str) -> None:
        self.ws = await websockets.connect(url, max_size=None)
        self._reader = asyncio.create_task(self._read())

    async def send(self, data: bytes) -> None:
        assert self.ws is not None
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.ws.send(data)

    async def open(
        self, key: str, token: str, client_id: int, state: bytes | None = None
    ) -> HPDocument:
        """Attach a provider for ``key``: Auth, then SyncStep1 (as the provider's onOpen);
        ``state``: a Y.Doc it held from before (a reload with persisted state)."""
        doc: Doc[Any] = Doc(client_id=client_id)
        if state is not None:
            doc.apply_update(state)
        entry = HPDocument(key, doc, doc.get("content", type=Text))
        self.docs[key] = entry
        doc.observe(lambda event: self._local(entry, event.update))
        await self.send(auth_frame(key, token))
        entry.unsynced = 1
        await self.send(hp.wrap(key, yproto.sync_step1(doc.get_state())))
        return entry

    def _local(self, entry: HPDocument, update: bytes) -> None:
        if self._remote or update == b"\x00\x00":
            return
        entry.unsynced += 1
        asyncio.get_running_loop().create_task(
            self.send(hp.wrap(entry.key, yproto.sync_update(update)))
        )

    def insert(self, key: str, index: int, text: str) -> None:
        entry = self.docs[key]
        entry.text.insert(utf8_length(entry.plain()[:index]), text)

    async def set_awareness(self, key: str, clock: int, state: object) -> None:
        entry = yproto.AwarenessEntry(self.docs[key].doc.client_id, clock, state)
        await self.send(hp.wrap(key, yproto.awareness_message(yproto.encode_awareness([entry]))))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader

    async def _read(self) -> None:
        assert self.ws is not None
        ws = self.ws
        try:
            async for data in ws:
                assert isinstance(data, bytes)
                self.frames.append(data)
                if data == hp.PING_FRAME:
                    await ws.send(hp.PONG_FRAME)
                    continue
                if data == hp.PONG_FRAME:
                    continue
                envelope = hp.parse(data)
                entry = self.docs.get(envelope.key)
                if entry is not None:
                    await self._apply(ws, entry, envelope)
        except websockets.ConnectionClosed:
            pass
        if ws.close_code is not None:
            self.closed = (ws.close_code, ws.close_reason or "")

    async def _apply(self, ws: Any, entry: HPDocument, envelope: hp.Envelope) -> None:
        decoder = Decoder(envelope.body)
        if envelope.kind == hp.SYNC:
            message = yproto.parse(bytes([yproto.SYNC]) + envelope.body)
            if message.sub == yproto.SYNC_STEP1:
                answer = yproto.sync_step2(entry.doc.get_update(message.payload))
                await ws.send(hp.wrap(entry.key, answer))
                return
            self._remote = True
            try:
                entry.doc.apply_update(message.payload)
            finally:
                self._remote = False
            if message.sub == yproto.SYNC_STEP2:
                entry.synced = True
        elif envelope.kind == hp.AWARENESS:
            for item in yproto.decode_awareness(decoder.var_bytes()):
                if item.state is None:
                    entry.awareness.pop(item.client, None)
                else:
                    entry.awareness[item.client] = item.state
        elif envelope.kind == hp.AUTH:
            sub = decoder.var_uint()
            if sub == hp.AUTH_OK:
                entry.scope = decoder.var_string()
            elif sub == 1:
                entry.denied.append(decoder.var_string())
        elif envelope.kind == hp.SYNC_STATUS:
            applied = decoder.var_uint() == 1
            entry.statuses.append(applied)
            if applied and entry.unsynced > 0:
                entry.unsynced -= 1
        elif envelope.kind == hp.STATELESS:
            entry.stateless.append(decoder.var_string())
        elif envelope.kind == hp.CLOSE:
            entry.closed = decoder.var_string()

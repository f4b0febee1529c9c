"""The y-protocols wire format (y-websocket): sync step 1/2, updates, awareness.

One WebSocket binary message is one frame; the room is in the URL. Frames:

* ``0`` Sync, then a sub-type (``0`` SyncStep1 with a state vector, ``1``
  SyncStep2 with an update, ``2`` Update), then a varUint8Array;
* ``1`` Awareness, then a varUint8Array of ``n × (clientID, clock, varString JSON)``;
* ``2`` Auth, then ``0`` (permission denied) and a varString reason;
* ``3`` QueryAwareness, no payload.

lib0 primitives: varUint is little-endian base-128; varString is the UTF-8
**byte** length then the bytes. (pycrdt's ``Encoder.write_var_string`` writes
the code-point count instead, which truncates non-ASCII strings, so we write
our own.)

Owns encoding and decoding only. Pure: must not import asyncio, storage, bus
or network code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import orjson

__all__ = [
    "AWARENESS",
    "AUTH",
    "AwarenessEntry",
    "Decoder",
    "Message",
    "ProtocolError",
    "QUERY_AWARENESS",
    "SYNC",
    "SYNC_STEP1",
    "SYNC_STEP2",
    "SYNC_UPDATE",
    "auth_denied",
    "awareness_message",
    "decode_awareness",
    "encode_awareness",
    "parse",
    "query_awareness",
    "sync_step1",
    "sync_step2",
    "sync_update",
    "write_var_string",
    "write_var_uint",
]

SYNC: Final = 0
AWARENESS: Final = 1
AUTH: Final = 2
QUERY_AWARENESS: Final = 3
SYNC_STEP1: Final = 0
SYNC_STEP2: Final = 1
SYNC_UPDATE: Final = 2


class ProtocolError(ValueError):
    """A malformed y-protocols frame."""


def write_var_uint(out: bytearray, number: int) -> None:
    """Append ``number`` as a lib0 varUint."""
    if number < 0:
        raise ValueError("varUint must be non-negative")
    while number > 0x7F:
        out.append(0x80 | (number & 0x7F))
        number >>= 7
    out.append(number)


def write_var_bytes(out: bytearray, data: bytes) -> None:
    """Append a lib0 varUint8Array."""
    write_var_uint(out, len(data))
    out += data


def write_var_string(out: bytearray, text: str) -> None:
    """Append a lib0 varString: UTF-8 byte length, then the bytes."""
    write_var_bytes(out, text.encode("utf-8"))


class Decoder:
    """Reads lib0 primitives from a buffer; raises ``ProtocolError`` past its end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def var_uint(self) -> int:
        number, shift = 0, 0
        while True:
            if self.position >= len(self.data):
                raise ProtocolError("frame ends inside a varUint")
            byte = self.data[self.position]
            self.position += 1
            number |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return number
            if shift > 70:
                raise ProtocolError("varUint too long")

    def byte(self) -> int:
        if self.position >= len(self.data):
            raise ProtocolError("frame ends early")
        value = self.data[self.position]
        self.position += 1
        return value

    def take(self, size: int) -> bytes:
        """The next ``size`` raw bytes."""
        end = self.position + size
        if size < 0 or end > len(self.data):
            raise ProtocolError("frame ends early")
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def var_bytes(self) -> bytes:
        size = self.var_uint()
        end = self.position + size
        if end > len(self.data):
            raise ProtocolError("frame ends inside a varUint8Array")
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def var_string(self) -> str:
        try:
            return self.var_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("varString is not UTF-8") from exc

    @property
    def done(self) -> bool:
        return self.position >= len(self.data)


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded frame: ``kind`` (SYNC, AWARENESS, …), sync ``sub``-type, ``payload``."""

    kind: int
    sub: int | None = None
    payload: bytes = b""


def parse(frame: bytes) -> Message:
    """Decode one frame; unknown kinds are returned with an empty payload."""
    decoder = Decoder(frame)
    kind = decoder.var_uint()
    if kind == SYNC:
        sub = decoder.var_uint()
        if sub not in (SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE):
            raise ProtocolError(f"unknown sync message {sub}")
        return Message(kind, sub, decoder.var_bytes())
    if kind == AWARENESS:
        return Message(kind, None, decoder.var_bytes())
    if kind == AUTH:
        return Message(kind, decoder.var_uint(), decoder.data[decoder.position :])
    return Message(kind)


def _sync(sub: int, payload: bytes) -> bytes:
    out = bytearray()
    write_var_uint(out, SYNC)
    write_var_uint(out, sub)
    write_var_bytes(out, payload)
    return bytes(out)


def sync_step1(state_vector: bytes) -> bytes:
    """SyncStep1: "here is what I have"."""
    return _sync(SYNC_STEP1, state_vector)


def sync_step2(update: bytes) -> bytes:
    """SyncStep2: the answer to a SyncStep1, what the asker lacks."""
    return _sync(SYNC_STEP2, update)


def sync_update(update: bytes) -> bytes:
    """An incremental update."""
    return _sync(SYNC_UPDATE, update)


def query_awareness() -> bytes:
    return bytes([QUERY_AWARENESS])


def auth_denied(reason: str) -> bytes:
    """Auth/permission-denied with ``reason`` (the y-websocket client logs it)."""
    out = bytearray([AUTH, 0])
    write_var_string(out, reason)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's awareness state; ``state`` None means removed."""

    client: int
    clock: int
    state: object


def decode_awareness(payload: bytes) -> list[AwarenessEntry]:
    """Decode an awareness update (the payload of an AWARENESS frame)."""
    decoder = Decoder(payload)
    entries = []
    for _ in range(decoder.var_uint()):
        client = decoder.var_uint()
        clock = decoder.var_uint()
        raw = decoder.var_string()
        try:
            state = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError("awareness state is not JSON") from exc
        entries.append(AwarenessEntry(client, clock, state))
    return entries


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    """Encode an awareness update payload."""
    out = bytearray()
    write_var_uint(out, len(entries))
    for entry in entries:
        write_var_uint(out, entry.client)
        write_var_uint(out, entry.clock)
        write_var_string(out, orjson.dumps(entry.state).decode())
    return bytes(out)


def awareness_message(payload: bytes) -> bytes:
    """An AWARENESS frame carrying an encoded awareness update."""
    out = bytearray()
    write_var_uint(out, AWARENESS)
    write_var_bytes(out, payload)
    return bytes(out)

"""The Hocuspocus envelope around y-protocols (``@hocuspocus/provider`` 4.x).

Every frame starts with the document's *routing key* as a lib0 varString —
the document name, or ``name + "\\0" + sessionId`` for a provider with
``sessionAwareness`` — followed by a varUint message type. One WebSocket
carries any number of documents. Types:

====  ==================  ===========================================================
 0    Sync                y-protocols sync: sub-type (SyncStep1/2, Update), varUint8Array
 1    Awareness           varUint8Array awareness update, as in y-protocols
 2    Auth                sub 0 Token (varString token [, varString provider version]);
                          server → client: sub 0 "send your token again",
                          1 PermissionDenied (varString reason),
                          2 Authenticated (varString ``"readonly"`` | ``"read-write"``)
 3    QueryAwareness      no payload
 4    SyncReply           Sync that does not ask back (server-internal in Hocuspocus)
 5    Stateless           varString, application-defined
 6    BroadcastStateless  server-internal; never legitimate from a client
 7    Close               server → client: varString reason; client → server: no payload
 8    SyncStatus          varUint, 1 = the write was applied, 0 = refused
 9/10 Ping/Pong           connection-level: the single byte, **no** routing key
====  ==================  ===========================================================

Sync (0), Awareness (1) and QueryAwareness (3) carry exactly the bytes of the
y-protocols frame of the same number, so the envelope is a prefix: strip the
routing key and a y-protocols frame remains (``Envelope.yjs``); prefix one and
it is a Hocuspocus frame (``wrap``). Auth (2) differs — y-protocols' only Auth
sub-type, 0, means "permission denied" there but "token" here — so ``wrap``
refuses a y-protocols Auth frame.

Owns encoding and decoding only, plus ``adds_nothing`` (Hocuspocus' read-only
acknowledgement rule). Pure: must not import asyncio, storage, bus or network
code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from pycrdt import Doc, TransactionEvent

from tandem.merge import yproto
from tandem.merge.updates import clock_ends
from tandem.merge.yproto import (
    AUTH,
    AWARENESS,
    QUERY_AWARENESS,
    SYNC,
    Decoder,
    ProtocolError,
    write_var_string,
    write_var_uint,
)

__all__ = [
    "AUTH",
    "AUTH_TOKEN",
    "AWARENESS",
    "BROADCAST_STATELESS",
    "CLOSE",
    "Envelope",
    "PING",
    "PONG",
    "QUERY_AWARENESS",
    "STATELESS",
    "SYNC",
    "SYNC_REPLY",
    "SYNC_STATUS",
    "adds_nothing",
    "authenticated",
    "close",
    "parse",
    "permission_denied",
    "read_token",
    "sync_status",
    "token_request",
    "wrap",
]

# The first four message types are y-protocols' own; Hocuspocus adds the rest.
SYNC_REPLY: Final = 4
STATELESS: Final = 5
BROADCAST_STATELESS: Final = 6
CLOSE: Final = 7
SYNC_STATUS: Final = 8
PING: Final = 9
PONG: Final = 10

AUTH_TOKEN: Final = 0
AUTH_DENIED: Final = 1
AUTH_OK: Final = 2

#: Connection-level keep-alive frames: one byte, no routing key.
PING_FRAME: Final = bytes([PING])
PONG_FRAME: Final = bytes([PONG])

_YJS_KINDS: Final = {
    SYNC: yproto.SYNC,
    SYNC_REPLY: yproto.SYNC,
    AWARENESS: yproto.AWARENESS,
    QUERY_AWARENESS: yproto.QUERY_AWARENESS,
}


@dataclass(frozen=True, slots=True)
class Envelope:
    """One decoded frame: routing ``key``, its ``document`` part, message ``kind``, ``body``."""

    key: str
    kind: int
    body: bytes

    @property
    def document(self) -> str:
        """The document name: the routing key up to its first NUL."""
        return self.key.split("\0", 1)[0]

    @property
    def yjs(self) -> bytes | None:
        """The y-protocols frame inside (Sync, SyncReply, Awareness, QueryAwareness), else None."""
        kind = _YJS_KINDS.get(self.kind)
        return None if kind is None else bytes([kind]) + self.body


def parse(frame: bytes) -> Envelope:
    """Split a frame into routing key, type and body; ``ProtocolError`` if the head is broken.

    The body is not decoded here: a malformed body concerns one document only.
    """
    decoder = Decoder(frame)
    key = decoder.var_string()
    kind = decoder.var_uint()
    return Envelope(key, kind, frame[decoder.position :])


def read_token(body: bytes) -> str:
    """The token of an Auth body (sub-type 0); ``ProtocolError`` for anything else."""
    decoder = Decoder(body)
    sub = decoder.var_uint()
    if sub != AUTH_TOKEN:
        raise ProtocolError(f"a client sends Auth sub-type 0 (token), not {sub}")
    return decoder.var_string()  # a provider version may follow; we need none


def _head(key: str, kind: int) -> bytearray:
    out = bytearray()
    write_var_string(out, key)
    write_var_uint(out, kind)
    return out


def wrap(key: str, frame: bytes) -> bytes:
    """A y-protocols frame (Sync, Awareness, QueryAwareness) addressed to ``key``."""
    if not frame or frame[0] not in (yproto.SYNC, yproto.AWARENESS, yproto.QUERY_AWARENESS):
        raise RuntimeError("only Sync, Awareness and QueryAwareness frames can be wrapped")
    out = bytearray()
    write_var_string(out, key)
    return bytes(out + frame)


def authenticated(key: str, read_only: bool) -> bytes:
    out = _head(key, AUTH)
    write_var_uint(out, AUTH_OK)
    write_var_string(out, "readonly" if read_only else "read-write")
    return bytes(out)


def permission_denied(key: str, reason: str) -> bytes:
    out = _head(key, AUTH)
    write_var_uint(out, AUTH_DENIED)
    write_var_string(out, reason)
    return bytes(out)


def token_request(key: str) -> bytes:
    """Ask the provider for its token again (it calls its ``token`` function)."""
    out = _head(key, AUTH)
    write_var_uint(out, AUTH_TOKEN)
    return bytes(out)


def sync_status(key: str, applied: bool) -> bytes:
    """SyncStatus: the provider counts a change as synced only on ``applied``."""
    out = _head(key, SYNC_STATUS)
    write_var_uint(out, 1 if applied else 0)
    return bytes(out)


def stateless(key: str, payload: str) -> bytes:
    """A Stateless message: the provider emits ``stateless`` with ``{payload}``."""
    out = _head(key, STATELESS)
    write_var_string(out, payload)
    return bytes(out)


def close(key: str, reason: str) -> bytes:
    """The server closes this document (the socket stays open)."""
    out = _head(key, CLOSE)
    write_var_string(out, reason)
    return bytes(out)


def adds_nothing(state: bytes, update: bytes) -> bool:
    """Does ``update`` hold nothing a document with ``state`` lacks (no structs, no deletes)?

    Hocuspocus acknowledges a read-only client's SyncStep2 as applied when
    this holds (``Y.snapshotContainsUpdate``), so a reader that never edited
    is not left with "unsynced changes". Structs are checked against the
    state vector; the delete set by applying ``update`` to a scratch copy and
    seeing whether the transaction changed anything. ``ProtocolError`` for an
    update that does not decode.
    """
    try:
        ends = clock_ends(update)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed Yjs update: {exc}") from None
    if not ends:
        return True  # no structs, no deletes
    scratch: Doc[Any] = Doc()
    changes: list[bytes] = []
    try:
        scratch.apply_update(state)
        known = _state_vector(scratch.get_state())
        if any(known.get(client, 0) < clock for client, clock in ends.items()):
            return False

        def seen(event: TransactionEvent) -> None:
            changes.append(event.update)

        scratch.observe(seen)
        scratch.apply_update(update)
    except BaseException as exc:  # noqa: BLE001 - yrs panics are BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise ProtocolError(f"malformed Yjs update: {exc}") from None
    return all(change == b"\x00\x00" for change in changes)


def _state_vector(data: bytes) -> dict[int, int]:
    """Decode a v1 state vector: count, then (client, clock) pairs."""
    decoder = Decoder(data)
    return {decoder.var_uint(): decoder.var_uint() for _ in range(decoder.var_uint())}

"""What document sessions say to each other over the bus: the one payload codec.

Two kinds of payload travel on a document's channel (``channel(doc)``), as
JSON bytes, each naming the node that sent it (a node ignores its own):

* an op another node committed: ``{"kind": "op", "node", "v", "op", "key",
  "seq", "user", "time", "crdt"?}`` (``crdt`` base64, present when the op was
  stored with a Yjs update) — decoded into a ``RemoteOp``, which frames it for
  this node's clients straight from the JSON and becomes the same ``OpRecord``
  the stores return only when asked (``RemoteOp.record``: a node that does not
  own the document applies it lazily, ``session/replication.py``);
* a presence message, as the wire carries it: ``{"kind": "presence", "node",
  "message": {...}}``.

Pure: no I/O (the bus moves the bytes; ``tandem.session.replication`` decides
what to do with them).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from tandem.ot.delta import Delta
from tandem.protocol import committed_op_message, encode
from tandem.records import OpRecord

__all__ = [
    "PresencePayload",
    "RemoteOp",
    "channel",
    "decode_remote",
    "encode_op",
    "encode_presence",
]


def channel(doc: str) -> str:
    """The bus channel of ``doc``."""
    return f"doc:{doc}"


@dataclass(frozen=True, slots=True)
class PresencePayload:
    """Another node's presence message (the wire form)."""

    node: str
    message: dict[str, Any]


class RemoteOp:
    """Another node's committed op as it arrived: decoded only as far as relaying needs.

    ``frame`` is the ``op`` message every member hears, built from the payload's
    JSON (the same text ``encode(op_message(record))`` makes: the payload's
    ``op`` is the owner's ``Delta.to_json()``, which a decode and encode give
    back unchanged); ``record`` decodes the delta (and the Yjs update) into the
    ``OpRecord``, for applying it to the document.
    """

    __slots__ = ("client_id", "doc", "payload", "seq", "version")

    def __init__(self, doc: str, payload: dict[str, Any]) -> None:
        self.doc = doc
        self.payload = payload
        self.version: int = payload["v"]
        self.client_id: str = payload["key"]
        self.seq: int | None = payload["seq"]

    def frame(self) -> str:
        payload = self.payload
        return encode(
            committed_op_message(
                self.doc, self.version, payload["op"], self.client_id, payload["user"], self.seq
            )
        )

    def record(self) -> OpRecord:
        payload = self.payload
        crdt = payload.get("crdt")
        return OpRecord(
            self.doc,
            self.version,
            Delta.from_json(payload["op"]),
            self.client_id,
            self.seq,
            payload["user"],
            payload["time"],
            base64.b64decode(crdt) if crdt else None,
        )


def encode_op(node: str, record: OpRecord) -> bytes:
    payload: dict[str, Any] = {
        "kind": "op",
        "node": node,
        "v": record.version,
        "op": record.op.to_json(),
        "key": record.client_id,
        "seq": record.seq,
        "user": record.user,
        "time": record.time,
    }
    if record.crdt is not None:
        payload["crdt"] = base64.b64encode(record.crdt).decode()
    return orjson.dumps(payload)


def encode_presence(node: str, message: dict[str, Any]) -> bytes:
    return orjson.dumps({"kind": "presence", "node": node, "message": message})


def decode_remote(doc: str, node: str, data: bytes) -> RemoteOp | PresencePayload | None:
    """A payload on ``doc``'s channel, an op's delta left undecoded (``RemoteOp``); None
    for this ``node``'s own or an unknown kind."""
    payload = orjson.loads(data)
    if payload.get("node") == node:
        return None
    kind = payload.get("kind")
    if kind == "op":
        return RemoteOp(doc, payload)
    if kind == "presence":
        return PresencePayload(payload.get("node", ""), payload["message"])
    return None

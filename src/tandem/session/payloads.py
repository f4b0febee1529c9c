"""What document sessions say to each other over the bus: the one payload codec.

Two kinds of payload travel on a document's channel (``channel(doc)``), as
JSON bytes, each naming the node that sent it (a node ignores its own):

* an op another node committed: ``{"kind": "op", "node", "v", "op", "key",
  "seq", "user", "time", "crdt"?}`` (``crdt`` base64, present when the op was
  stored with a Yjs update) — decoded into the same ``OpRecord`` the stores
  return;
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
from tandem.records import OpRecord

__all__ = ["PresencePayload", "channel", "decode", "encode_op", "encode_presence"]


def channel(doc: str) -> str:
    """The bus channel of ``doc``."""
    return f"doc:{doc}"


@dataclass(frozen=True, slots=True)
class PresencePayload:
    """Another node's presence message (the wire form)."""

    node: str
    message: dict[str, Any]


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


def decode(doc: str, node: str, data: bytes) -> OpRecord | PresencePayload | None:
    """A payload on ``doc``'s channel; None for this ``node``'s own or an unknown kind."""
    payload = orjson.loads(data)
    if payload.get("node") == node:
        return None
    kind = payload.get("kind")
    if kind == "op":
        crdt = payload.get("crdt")
        return OpRecord(
            doc,
            payload["v"],
            Delta.from_json(payload["op"]),
            payload["key"],
            payload["seq"],
            payload["user"],
            payload["time"],
            base64.b64decode(crdt) if crdt else None,
        )
    if kind == "presence":
        return PresencePayload(payload.get("node", ""), payload["message"])
    return None

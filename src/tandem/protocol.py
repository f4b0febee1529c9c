"""Typed wire messages of ``/collab``: parse, validate, serialise. Never awaits.

``parse(frame)`` turns one client frame into one of the message dataclasses
below or raises a ``TandemError`` subclass naming the problem (the gateway
turns it into one ``error`` reply). The ``*_message`` functions build server
messages as plain dicts; ``encode`` serialises one message or a batch.
Everything here follows ``docs/protocol.md``; that document is the contract.

Must not import asyncio, FastAPI, storage or bus.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from tandem.errors import (
    FrameTooLarge,
    InvalidDocumentId,
    InvalidOperation,
    ProtocolError,
    TandemError,
    UnknownMessageType,
)
from tandem.ot.delta import MAX_COUNT, Delta
from tandem.ot.sugar import SUGAR_TYPES, from_simple
from tandem.records import OpRecord, public_client

__all__ = [
    "Cursor",
    "Join",
    "Leave",
    "Merge",
    "Ping",
    "Presence",
    "PROTOCOL_VERSION",
    "Submit",
    "ack_message",
    "batch",
    "catchup_message",
    "encode",
    "error_message",
    "hello_message",
    "merged_message",
    "committed_op_message",
    "op_message",
    "parse",
    "snapshot_content",
    "snapshot_message",
    "validate_client_id",
    "validate_doc_id",
]

PROTOCOL_VERSION: Final = 1
MAX_STATE_BYTES: Final = 2048
MAX_REF_LENGTH: Final = 64

_DOC_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@~/-]{0,199}")
_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def validate_doc_id(doc: object) -> str:
    """A document id, or ``InvalidDocumentId``."""
    if not isinstance(doc, str) or not _DOC_ID.fullmatch(doc):
        raise InvalidDocumentId(
            "document ids are 1-200 characters of A-Za-z0-9._:@~/- starting with a letter or digit"
        )
    return doc


def validate_client_id(client: object) -> str:
    if not isinstance(client, str) or not _CLIENT_ID.fullmatch(client):
        raise ProtocolError("client ids are 1-64 characters of A-Za-z0-9_-")
    return client


@dataclass(frozen=True, slots=True)
class Cursor:
    index: int
    length: int = 0

    def to_json(self) -> dict[str, int]:
        return {"index": self.index, "length": self.length}


@dataclass(frozen=True, slots=True)
class Join:
    doc: str
    version: int | None = None
    ref: str | int | None = None
    #: ``h``: the fingerprint of the client's document at ``version`` (None: not sent).
    fingerprint: str | None = None
    #: ``i``: the incarnation ``version`` belongs to (None: not sent).
    incarnation: str | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    doc: str
    ref: str | int | None = None


@dataclass(frozen=True, slots=True)
class Submit:
    """An op (or sugar) to commit; ``doc`` None means the only joined document."""

    doc: str | None
    op: Delta
    base_version: int | None
    seq: int | None
    ref: str | int | None = None


@dataclass(frozen=True, slots=True)
class Merge:
    """An offline branch to merge: ``ops`` in order, the first based on ``base_version``."""

    doc: str | None
    base_version: int
    ops: tuple[Delta, ...]
    seq: int | None
    ref: str | int | None = None


@dataclass(frozen=True, slots=True)
class Presence:
    doc: str | None
    cursor: Cursor | None
    state: dict[str, Any] | None
    base_version: int | None
    ref: str | int | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    id: str | int | None = None


ClientMessage = Join | Leave | Submit | Merge | Presence | Ping


# -- parsing -----------------------------------------------------------------


def parse(
    frame: str | bytes,
    *,
    max_bytes: int = 1 << 20,
    max_components: int = 10_000,
    max_merge_ops: int = 20_000,
) -> ClientMessage:
    """Parse and validate one client frame (see ``docs/protocol.md``)."""
    if isinstance(frame, bytes):
        raise ProtocolError("binary frames are not accepted on /collab; send JSON text")
    # A code point is 1-4 bytes of UTF-8: count bytes only when characters can't decide.
    if len(frame) > max_bytes or (len(frame) * 4 > max_bytes and _utf8_length(frame) > max_bytes):
        raise FrameTooLarge(f"frame larger than {max_bytes} bytes")
    try:
        data = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"frame is not valid JSON: {str(exc)[:80]}") from None
    if not isinstance(data, dict):
        raise ProtocolError("a message must be a JSON object with a 'type'")
    return parse_message(data, max_components=max_components, max_merge_ops=max_merge_ops)


def _utf8_length(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (a lone surrogate, which JSON can carry, counts 3)."""
    return len(text.encode("utf-8", "surrogatepass"))


def parse_message(
    data: Mapping[str, Any], *, max_components: int = 10_000, max_merge_ops: int = 20_000
) -> ClientMessage:
    kind = data.get("type")
    if not isinstance(kind, str):  # before any lookup: a list or dict type is unhashable
        raise ProtocolError("a message must have a string 'type'")
    ref = _ref(data)
    if kind == "op":
        raw_op = data.get("op")
        if isinstance(raw_op, list) and len(raw_op) > max_components:
            raise InvalidOperation(f"op has more than {max_components} components")
        return Submit(_optional_doc(data), Delta.from_json(raw_op), _version(data), _seq(data), ref)
    if kind in SUGAR_TYPES:
        return Submit(_optional_doc(data), from_simple(data), _version(data), _seq(data), ref)
    if kind == "merge":
        return _merge(data, ref, max_components, max_merge_ops)
    if kind == "presence":
        return Presence(_optional_doc(data), _cursor(data), _state(data), _version(data), ref)
    if kind == "join":
        return Join(
            validate_doc_id(data.get("doc")),
            _version(data),
            ref,
            _short_string(data, "h"),
            _short_string(data, "i"),
        )
    if kind == "leave":
        return Leave(validate_doc_id(data.get("doc")), ref)
    if kind == "ping":
        return Ping(ref if "id" not in data else _ref({"ref": data.get("id")}))
    raise UnknownMessageType(f"unknown message type {kind[:40]!r}")


def _merge(
    data: Mapping[str, Any], ref: str | int | None, max_components: int, max_merge_ops: int
) -> Merge:
    """``{"type": "merge", "v": BASE, "ops": [delta, ...], "seq"?, "doc"?}``."""
    base = _version(data)
    if base is None:
        raise ProtocolError("merge needs 'v', the version its first op is based on")
    raw_ops = data.get("ops")
    if not isinstance(raw_ops, list) or not raw_ops:
        raise ProtocolError("merge needs 'ops', a non-empty list of deltas")
    if len(raw_ops) > max_merge_ops:
        raise InvalidOperation(f"merge has more than {max_merge_ops} ops")
    ops: list[Delta] = []
    for raw_op in raw_ops:
        if isinstance(raw_op, list) and len(raw_op) > max_components:
            raise InvalidOperation(f"a merge op has more than {max_components} components")
        ops.append(Delta.from_json(raw_op))
    return Merge(_optional_doc(data), base, tuple(ops), _seq(data), ref)


def _optional_doc(data: Mapping[str, Any]) -> str | None:
    doc = data.get("doc")
    return None if doc is None else validate_doc_id(doc)


def _int_field(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if type(value) is not int or value < 0 or value > MAX_COUNT * 4:
        raise ProtocolError(f"{key!r} must be a non-negative integer")
    return value


def _version(data: Mapping[str, Any]) -> int | None:
    return _int_field(data, "v")


def _seq(data: Mapping[str, Any]) -> int | None:
    return _int_field(data, "seq")


def _ref(data: Mapping[str, Any]) -> str | int | None:
    ref = data.get("ref")
    if ref is None:
        return None
    if isinstance(ref, bool) or not isinstance(ref, str | int):
        raise ProtocolError("'ref' must be a string or an integer")
    if isinstance(ref, str) and len(ref) > MAX_REF_LENGTH:
        raise ProtocolError(f"'ref' is longer than {MAX_REF_LENGTH} characters")
    if isinstance(ref, int) and abs(ref) > 2**53:
        raise ProtocolError("'ref' is out of range")
    return ref


def _cursor(data: Mapping[str, Any]) -> Cursor | None:
    if "cursor" not in data:
        raise ProtocolError("presence needs 'cursor' (an object, or null for none)")
    raw = data["cursor"]
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ProtocolError('\'cursor\' must be {"index": I, "length": L} or null')
    index, length = raw.get("index"), raw.get("length", 0)
    for name, value in (("index", index), ("length", length)):
        if type(value) is not int or value < 0 or value > MAX_COUNT:
            raise ProtocolError(f"cursor {name!r} must be a non-negative integer")
    return Cursor(index, length)  # type: ignore[arg-type]


def _state(data: Mapping[str, Any]) -> dict[str, Any] | None:
    state = data.get("state")
    if state is None:
        return None
    if not isinstance(state, dict):
        raise ProtocolError("presence 'state' must be an object")
    if len(orjson.dumps(state)) > MAX_STATE_BYTES:
        raise ProtocolError(f"presence 'state' is larger than {MAX_STATE_BYTES} bytes")
    return state


# -- server messages ------------------------------------------------------------


def hello_message(client: str, user: str, name: str, expires: float | None) -> dict[str, Any]:
    return {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "client": client,
        "user": user,
        "name": name,
        "expires": int(expires) if expires is not None else None,
    }


def _short_string(data: Mapping[str, Any], key: str) -> str | None:
    """``data[key]``, absent or a string of at most 64 characters (``h``, ``i``)."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise ProtocolError(f"'{key}' must be a string of at most 64 characters")
    return value


def snapshot_content(content: Delta) -> orjson.Fragment:
    """A snapshot's content as JSON, encoded once: every snapshot message built with
    it copies the text instead of encoding the document again."""
    return orjson.Fragment(orjson.dumps(content.to_json()))


def snapshot_message(
    doc: str,
    version: int,
    content: Delta | orjson.Fragment,
    presence: list[dict[str, Any]],
    permission: str,
    last_seq: int | None = None,
    incarnation: str = "",
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "snapshot",
        "doc": doc,
        "v": version,
        "content": content if isinstance(content, orjson.Fragment) else content.to_json(),
    }
    return _join_reply(message, presence, permission, last_seq, incarnation)


def op_message(record: OpRecord) -> dict[str, Any]:
    """A committed op as every other member hears it."""
    return committed_op_message(
        record.doc, record.version, record.op.to_json(), record.client_id, record.user, record.seq
    )


def committed_op_message(
    doc: str, version: int, op: list[Any], client_id: str, user: str, seq: int | None
) -> dict[str, Any]:
    """``op_message`` from its fields, the delta already in its JSON form (``op``)."""
    return {
        "type": "op",
        "doc": doc,
        "v": version,
        "op": op,
        "client": public_client(client_id),
        "user": user,
        "seq": seq,
    }


def catchup_message(
    doc: str,
    from_version: int,
    version: int,
    records: Sequence[OpRecord],
    presence: list[dict[str, Any]],
    permission: str,
    last_seq: int | None = None,
    incarnation: str = "",
) -> dict[str, Any]:
    """The ops after ``from_version``, each in its wire form (the author's public client id)."""
    message: dict[str, Any] = {
        "type": "catchup",
        "doc": doc,
        "from": from_version,
        "v": version,
        "ops": [
            {
                "v": record.version,
                "op": record.op.to_json(),
                "client": public_client(record.client_id),
                "user": record.user,
                "seq": record.seq,
            }
            for record in records
        ],
    }
    return _join_reply(message, presence, permission, last_seq, incarnation)


def _join_reply(
    message: dict[str, Any],
    presence: list[dict[str, Any]],
    permission: str,
    last_seq: int | None,
    incarnation: str,
) -> dict[str, Any]:
    """What a snapshot and a catch-up both end with: who is here, what the client may
    do, its last sequenced seq, and the incarnation the versions belong to."""
    message["presence"] = presence
    message["permission"] = permission
    message["last_seq"] = last_seq
    if incarnation:
        message["i"] = incarnation
    return message


def ack_message(doc: str, seq: int | None, version: int, ref: str | int | None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "ack", "doc": doc, "seq": seq, "v": version}
    if ref is not None:
        message["ref"] = ref
    return message


def merged_message(
    doc: str, seq: int | None, version: int, op: Delta, ref: str | int | None
) -> dict[str, Any]:
    """Answer to a ``merge``: the author's final state + ``op`` is the document at ``v``."""
    message: dict[str, Any] = {
        "type": "merged",
        "doc": doc,
        "seq": seq,
        "v": version,
        "op": op.to_json(),
    }
    if ref is not None:
        message["ref"] = ref
    return message


def error_message(
    error: TandemError,
    *,
    doc: str | None = None,
    seq: int | None = None,
    ref: str | int | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "error", "code": error.code, "message": error.message}
    message.update(error.details())
    if doc is not None:
        message["doc"] = doc
    if seq is not None:
        message["seq"] = seq
    if ref is not None:
        message["ref"] = ref
    return message


def encode(message: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """One message, or a batch (a list, sent as a JSON array), as JSON text."""
    return orjson.dumps(message).decode()


def batch(encoded: Sequence[str]) -> str:
    """Join already encoded messages into one frame (a JSON array when more than one)."""
    if len(encoded) == 1:
        return encoded[0]
    return "[" + ",".join(encoded) + "]"

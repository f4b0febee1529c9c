"""What nodes say to each other about forwarded submissions: the one codec.

A node that does not own a document sends each submission of its clients to
the owner (``session/owners.py``), on the owner's node channel
(``node_channel(owner)``), and hears the answer on its own. Three messages,
JSON bytes:

* ``{"kind": "submit", "id", "from", "doc", "client", "user", "name", "op"?,
  "base"?, "seq"?, "yjs"?}``: sequence this (an OT op based on ``base``, an
  offline merge's commit op, or a Yjs update, base64) as ``client`` of
  ``user`` — the same ``(user, client, seq)`` the client sent, so a resend
  after a lost answer or a failover is recognised as a duplicate;
* ``{"kind": "answer", "id", "version"}``: acknowledged as ``version`` (durable
  in the store), or ``{"kind": "answer", "id", "code", "message"}``: refused,
  with the error the owner's client would have heard;
* ``{"kind": "answer", "id", "owner": false}``: this node does not own the
  document (any more): ask the lease again.

Pure: no I/O.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from tandem.errors import AuthorizeFailed, Rejected, TandemError
from tandem.ot.delta import Delta

__all__ = [
    "Answer",
    "Forwarded",
    "OwnerRefused",
    "decode",
    "encode_answer",
    "encode_submit",
    "node_channel",
]


def node_channel(node: str) -> str:
    """The bus channel where ``node`` hears forwarded submissions and their answers."""
    return f"node:{node}"


class OwnerRefused(TandemError):
    """The owner node refused a forwarded submission: its error, as its client would see it."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.extra = details or {}

    def details(self) -> dict[str, object]:
        return dict(self.extra)

    def local(self) -> TandemError:
        """The error as this node would have raised it (an ``authorize`` rejection's own type)."""
        rejection = self.extra.get("rejection")
        if self.code in (Rejected.code, AuthorizeFailed.code) and isinstance(rejection, dict):
            kind = Rejected if self.code == Rejected.code else AuthorizeFailed
            return kind(str(rejection.get("code")), str(rejection.get("reason")))
        return self


@dataclass(frozen=True, slots=True)
class Forwarded:
    """A submission another node's client made, to be sequenced here (the owner)."""

    id: int
    origin: str
    doc: str
    client: str
    user: str
    name: str
    op: Delta | None
    base_version: int | None
    seq: int | None
    yjs_update: bytes | None


@dataclass(frozen=True, slots=True)
class Answer:
    """The owner's answer: ``version`` (acknowledged), an error, or ``not_owner``.

    Both a version and an error: a Yjs update the ``authorize`` hook rejected,
    committed as ``version`` with its revert after it (acknowledged, and refused).
    """

    id: int
    version: int | None = None
    error: OwnerRefused | None = None
    not_owner: bool = False


def encode_submit(submission: Forwarded) -> bytes:
    payload: dict[str, Any] = {
        "kind": "submit",
        "id": submission.id,
        "from": submission.origin,
        "doc": submission.doc,
        "client": submission.client,
        "user": submission.user,
        "name": submission.name,
    }
    if submission.op is not None:
        payload["op"] = submission.op.to_json()
    if submission.base_version is not None:
        payload["base"] = submission.base_version
    if submission.seq is not None:
        payload["seq"] = submission.seq
    if submission.yjs_update is not None:
        payload["yjs"] = base64.b64encode(submission.yjs_update).decode()
    return orjson.dumps(payload)


def encode_answer(answer: Answer) -> bytes:
    payload: dict[str, Any] = {"kind": "answer", "id": answer.id}
    if answer.not_owner:
        payload["owner"] = False
    elif answer.error is not None:
        payload["code"] = answer.error.code
        payload["message"] = answer.error.message
        if answer.error.extra:
            payload["details"] = answer.error.extra
        if answer.version is not None:
            payload["version"] = answer.version
    else:
        payload["version"] = answer.version
    return orjson.dumps(payload)


def decode(data: bytes) -> Forwarded | Answer | None:
    """A message on a node channel; None for an unknown kind."""
    payload = orjson.loads(data)
    kind = payload.get("kind")
    if kind == "submit":
        op = payload.get("op")
        yjs = payload.get("yjs")
        return Forwarded(
            payload["id"],
            payload["from"],
            payload["doc"],
            payload["client"],
            payload["user"],
            payload.get("name", ""),
            Delta.from_json(op) if op is not None else None,
            payload.get("base"),
            payload.get("seq"),
            base64.b64decode(yjs) if yjs else None,
        )
    if kind == "answer":
        if payload.get("owner") is False:
            return Answer(payload["id"], not_owner=True)
        if "code" in payload:
            error = OwnerRefused(payload["code"], payload["message"], payload.get("details"))
            return Answer(payload["id"], payload.get("version"), error)
        return Answer(payload["id"], version=payload["version"])
    return None

"""When an author's ack goes out, relative to its op's broadcast (``Delivery.committed``).

A commit that is synced when it is committed (PostgreSQL, the memory store)
acknowledges its author before the op is broadcast: the author's next op need
not wait for the fan-out to reach every member. A commit synced later (SQLite)
is broadcast at once and acknowledged once synced. Either way each member hears
versions in order, and an author its ack before anything sequenced after its op.
"""

from __future__ import annotations

import orjson

from tandem.ot.delta import Delta
from tandem.ot.document import Document
from tandem.records import OpRecord
from tandem.session.delivery import Delivery, Member, Pending, Submission


class Peer:
    def __init__(self, client: str, log: list[tuple[str, str, int]]) -> None:
        self.client = client
        self.user = "u"
        self.name = "u"
        self._log = log

    def send(self, message: str) -> None:
        decoded = orjson.loads(message)
        self._log.append((self.client, decoded["type"], decoded["v"]))


class Listener:
    def advanced(self, record: OpRecord, document: Document, pending: Pending | None) -> None:
        pass

    def acknowledged(self, pending: Pending) -> None:
        pass


def _room(*clients: str) -> tuple[Delivery, dict[str, Member], list[tuple[str, str, int]]]:
    log: list[tuple[str, str, int]] = []
    delivery = Delivery("d", 0, Listener())
    members = {}
    for client in clients:
        members[client] = Member(Peer(client, log), "write")
        delivery.joined(members[client])
    return delivery, members, log


def _decide(delivery: Delivery, author: Member, version: int, seq: int) -> None:
    record = OpRecord("d", version, Delta().insert("x"), author.key, seq, "u", 0.0)
    pending = Pending(version, author, Submission(Delta().insert("x"), version - 1, seq))
    pending.record, pending.document = record, Document()
    delivery.decided(pending)


def test_a_synced_commit_acks_its_author_before_the_broadcast() -> None:
    delivery, members, log = _room("a", "b", "c")
    _decide(delivery, members["a"], 1, 1)
    delivery.committed(1, synced=True)
    assert log == [("a", "ack", 1), ("b", "op", 1), ("c", "op", 1)]


def test_a_commit_synced_later_is_broadcast_first_and_acked_once_synced() -> None:
    delivery, members, log = _room("a", "b")
    _decide(delivery, members["a"], 1, 1)
    delivery.committed(1, synced=False)
    assert log == [("b", "op", 1)]
    delivery.synced(1)
    assert log == [("b", "op", 1), ("a", "ack", 1)]


def test_two_authors_in_one_commit_each_hear_the_other_in_version_order() -> None:
    delivery, members, log = _room("a", "b", "c")
    _decide(delivery, members["a"], 1, 1)
    _decide(delivery, members["b"], 2, 1)
    delivery.committed(2, synced=True)
    assert log == [
        ("a", "ack", 1),
        ("b", "op", 1),
        ("c", "op", 1),
        ("b", "ack", 2),
        ("a", "op", 2),
        ("c", "op", 2),
    ]

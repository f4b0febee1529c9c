"""The delivery core's forwarded submissions: an author on a non-owner node.

The author's submission went to the owner node; its op comes back as another
node's op (``remote``) and the owner's answer arrives before or after it. In
every order the author hears the versions before its op, then its ack (never
its own op), then the versions after it — what its client's state machine
needs — and exactly one ack. Every test runs twice: with the op applied as it
arrives (``remote``) and relayed, framed, to be applied later (``relay``).
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from tandem.errors import ReadOnly
from tandem.ot.delta import Delta
from tandem.ot.document import Document
from tandem.protocol import encode, op_message
from tandem.records import OpRecord
from tandem.session.delivery import Delivery, Member, Pending, Submission


class Peer:
    def __init__(self, client: str, user: str = "u") -> None:
        self.client = client
        self.user = user
        self.name = user
        self.heard: list[dict[str, Any]] = []

    def send(self, message: str) -> None:
        self.heard.append(orjson.loads(message))

    def summary(self) -> list[tuple[str, int | None]]:
        return [(m["type"], m.get("v")) for m in self.heard]


class Listener:
    def advanced(self, record: OpRecord, document: Document, pending: Pending | None) -> None:
        pass

    def acknowledged(self, pending: Pending) -> None:
        pass


def record(version: int, client: str, seq: int | None, user: str = "u") -> OpRecord:
    return OpRecord("d", version, Delta().insert("x"), f"{client}@{user}", seq, user, 0.0)


_WAY = ["remote"]


@pytest.fixture(autouse=True, params=["remote", "relay"])
def _way(request: pytest.FixtureRequest) -> None:
    _WAY[0] = request.param


def remote(delivery: Delivery, rec: OpRecord) -> None:
    if _WAY[0] == "relay":
        assert delivery.relayable
        delivery.relay(rec.version, rec.client_id, rec.seq, encode(op_message(rec)))
    else:
        delivery.remote(rec, Document())


#: The bus brings versions 1, 2 (the author's), 3 in order; the owner's answer anywhere.
ORDERS = [
    order
    for order in itertools.permutations(("before", "mine", "after", "answer"))
    if order.index("before") < order.index("mine") < order.index("after")
]


@pytest.mark.parametrize("order", ORDERS)
def test_the_author_hears_earlier_ops_its_ack_then_later_ones(order: tuple[str, ...]) -> None:
    delivery = Delivery("d", 0, Listener())
    author, other = Peer("a"), Peer("b")
    member = Member(author, "write")
    delivery.joined(member)
    delivery.joined(Member(other, "write"))
    done: list[int] = []
    pending = Pending(0, member, Submission(Delta().insert("x"), 0, 7, "r", done=done.append))
    delivery.forwarding(pending)
    for event in order:
        if event == "before":
            remote(delivery, record(1, "c", 1))
        elif event == "mine":
            remote(delivery, record(2, "a", 7))
        elif event == "after":
            remote(delivery, record(3, "c", 2))
        else:
            delivery.answered(pending, 2)
    assert author.summary() == [("op", 1), ("ack", 2), ("op", 3)]
    assert author.heard[1]["seq"] == 7 and author.heard[1]["ref"] == "r"
    assert other.summary() == [("op", 1), ("op", 2), ("op", 3)]
    assert done == [2]
    assert not delivery.forwarded and member.held is None


def test_an_op_without_seq_is_matched_by_the_answered_version() -> None:
    delivery = Delivery("d", 0, Listener())
    author = Peer("a")
    member = Member(author, "write")
    delivery.joined(member)
    pending = Pending(0, member, Submission(yjs_update=b"\x00"))
    delivery.forwarding(pending)
    remote(delivery, record(1, "a", None))  # its own op, not recognisable yet: held
    remote(delivery, record(2, "c", 1))
    assert author.heard == []
    delivery.answered(pending, 1)
    assert author.summary() == [("ack", 1), ("op", 2)]


def test_a_duplicate_answered_with_an_old_version_is_acked_at_once() -> None:
    delivery = Delivery("d", 5, Listener())
    author = Peer("a")
    member = Member(author, "write")
    delivery.joined(member)
    pending = Pending(0, member, Submission(Delta().insert("x"), 2, 3))
    delivery.forwarding(pending)
    remote(delivery, record(6, "c", 1))
    delivery.answered(pending, 4)
    assert author.summary() == [("ack", 4), ("op", 6)]


def test_a_refused_forward_releases_what_the_author_was_held_from() -> None:
    delivery = Delivery("d", 0, Listener())
    author = Peer("a")
    member = Member(author, "write")
    delivery.joined(member)
    pending = Pending(0, member, Submission(Delta().insert("x"), 0, 1))
    delivery.forwarding(pending)
    remote(delivery, record(1, "c", 1))
    assert author.heard == []
    assert delivery.in_flight(lambda p: p.author is member)
    delivery.withdrawn(pending)
    assert author.summary() == [("op", 1)]
    assert not delivery.busy and member.held is None
    delivery.answered(pending, 1)  # a late answer to a withdrawn forward: nothing
    assert author.summary() == [("op", 1)]


def test_the_owners_error_is_what_the_author_would_have_heard() -> None:
    from tandem.session.forwards import Answer, OwnerRefused, decode, encode_answer

    answer = decode(encode_answer(Answer(3, error=OwnerRefused("ERR_READ_ONLY", "no"))))
    assert isinstance(answer, Answer) and answer.error is not None
    assert (answer.error.code, answer.error.message) == (ReadOnly.code, "no")


def test_ops_wait_unapplied_only_while_nothing_here_needs_the_document() -> None:
    """``relayable``: not while a decision of this node's awaits its commit or its
    sync, nor while a forwarded merge's reply (built from the document) is owed."""
    delivery = Delivery("d", 0, Listener())
    assert delivery.relayable
    author = Member(Peer("a"), "write")
    delivery.decided(Pending(1, author, Submission(seq=1), record(1, "a", 1), Document()))
    assert not delivery.relayable  # in the outbox
    delivery.committed(1, synced=False)
    assert not delivery.relayable  # committed here, not synced
    delivery.synced(1)
    assert delivery.relayable
    merge = Pending(0, author, Submission(seq=2, answer=lambda pending: "{}"))
    delivery.forwarding(merge)
    assert not delivery.relayable
    delivery.withdrawn(merge)
    delivery.forwarding(Pending(0, author, Submission(seq=3)))
    assert delivery.relayable  # a forwarded op's ack needs no document

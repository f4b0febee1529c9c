"""The pure parts of ``authorize``: verdicts, taking a held decision back, the Yjs revert."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text
from tests.property.strategies import document_and_op, ops

from tandem.authorization import (
    AUTHORIZE_OUTCOMES,
    AuthorizeRequest,
    Rejection,
    compensation,
    verdict,
)
from tandem.errors import AuthorizeFailed, Rejected
from tandem.merge.plaintext import PlainText
from tandem.merge.replica import Replica
from tandem.merge.translate import apply_delta
from tandem.ot.delta import Delta
from tandem.ot.document import Document
from tandem.records import OpRecord
from tandem.sequencer import Commit, Sequencer
from tandem.session.delivery import Delivery, Pending


def test_verdicts_under_each_failure_policy() -> None:
    no = Rejection("locked", "the title is locked")
    assert verdict(None, None, "reject") == ("allowed", None)
    outcome, error = verdict(no, None, "allow")  # a rejection is one under either policy
    assert outcome == "rejected" and isinstance(error, Rejected)
    assert error.details() == {"rejection": {"code": "locked", "reason": "the title is locked"}}
    assert error.code == "ERR_REJECTED" and "the title is locked" in error.message
    outcome, error = verdict(None, "the authorize hook took longer than 1 s", "reject")
    assert outcome == "failed_closed" and isinstance(error, AuthorizeFailed)
    assert error.code == "ERR_AUTHORIZE_FAILED" and "longer than 1 s" in error.reason
    assert verdict(None, "boom", "allow") == ("failed_open", None)
    # An answer that is neither None nor a Rejection is a failure of the hook.
    outcome, error = verdict(False, None, "reject")
    assert outcome == "failed_closed" and "returned bool" in error.reason  # type: ignore[union-attr]
    assert verdict("no", None, "allow") == ("failed_open", None)
    assert {
        verdict(a, f, p)[0] for a in (None, no, 1) for f in (None, "x") for p in ("reject", "allow")
    } == set(AUTHORIZE_OUTCOMES)
    with pytest.raises(ValueError):
        verdict(None, None, "maybe")


@pytest.mark.parametrize(
    ("code", "reason"),
    [("", "r"), ("has space", "r"), ("x" * 65, "r"), ("ok", "r" * 501), ("ok", 5)],
)
def test_bad_rejections_are_refused(code: str, reason: Any) -> None:
    with pytest.raises(ValueError):
        Rejection(code, reason)


@settings(max_examples=150, deadline=None)
@given(document_and_op(), st.data())
def test_a_withdrawn_decision_leaves_the_sequencer_as_if_it_never_came(
    case: tuple[Document, Delta], data: st.DataObject
) -> None:
    document, op = case
    held = Sequencer("d", document, 0)
    fresh = Sequencer("d", document, 0)
    decision = held.submit(op, 0, client_id="c", seq=1, user="u", now=0.0)
    if not isinstance(decision, Commit):
        return
    delivery = Delivery("d", 0, _Listener())
    pending = Pending(1, None, record=decision.entry, document=decision.document)
    delivery.decided(pending)
    held.withdraw(1, document)
    delivery.withdraw(pending)
    assert not delivery.outbox and not delivery.in_flight()
    assert (held.version, held.document, held.find_seq("c", 1)) == (0, document, None)
    # The same client may send that seq again, and it is decided as on a fresh sequencer.
    other = data.draw(ops(len(document)))
    again = held.submit(other, 0, client_id="c", seq=1, user="u", now=0.0)
    expected = fresh.submit(other, 0, client_id="c", seq=1, user="u", now=0.0)
    assert again == expected


def test_only_the_head_can_be_withdrawn() -> None:
    sequencer = Sequencer("d", Document(), 0)
    sequencer.submit(Delta().insert("a"), 0, client_id="c", seq=1, user="u", now=0.0)
    sequencer.submit(Delta().insert("b"), 1, client_id="c", seq=2, user="u", now=0.0)
    with pytest.raises(ValueError):
        sequencer.withdraw(1, Document())
    delivery = Delivery("d", 0, _Listener())
    first, second = Pending(1, None), Pending(2, None)
    delivery.outbox.extend([first, second])
    with pytest.raises(ValueError):
        delivery.withdraw(first)


@settings(max_examples=60, deadline=None)
@given(document_and_op())
def test_a_rejected_yjs_update_is_reverted_for_the_server_and_its_author(
    case: tuple[Document, Delta],
) -> None:
    """The replica merges the client's update (v1), then the server's revert (v2): the
    content is as before; a replay of both stored updates in turn is identical, and the
    client, given the revert, ends at the same content and edits on from there."""
    document, op = case
    server = Replica.seeded(document, 0)
    initial = server.state()
    author: Doc[Any] = Doc(client_id=77)
    author.apply_update(initial)
    text = author.get("content", type=Text)
    before_state = author.get_state()
    with author.transaction():
        apply_delta(text, None, PlainText(str(text)), op)
    delta, effective = server.merge(author.get_update(before_state))
    server.advance(1)
    undone = server.apply(compensation(delta, document), 2)
    assert server.content() == document.to_delta()
    author.apply_update(undone)
    assert str(text) == document.text()
    replay = Replica(initial, 0)  # as a restart rebuilds it: stored state, then stored updates
    replay.replay(effective, 1, delta)
    replay.replay(undone, 2, compensation(delta, document))
    assert replay.content() == document.to_delta()
    assert replay.state() == server.state()
    before_state = author.get_state()
    with author.transaction():
        text.insert(0, "Z")
    merged, _ = server.merge(author.get_update(before_state))
    assert merged == Delta().insert("Z")


class _Listener:
    def advanced(self, record: OpRecord, document: Document, pending: Pending | None) -> None:
        pass

    def acknowledged(self, pending: Pending) -> None:
        pass


def test_the_worked_example_in_extending_md_decides_as_documented() -> None:
    text = (Path(__file__).parents[2] / "docs" / "extending.md").read_text()
    section = text.split("#### Example: a length limit and a locked title", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "extending.md", "exec"), namespace)  # noqa: S102 - our own docs
    rules = namespace["Rules"]()
    head = Document("T" * 80 + " body")

    def ask(op: Delta, user: str = "bob", document: Document = head) -> Rejection | None:
        request = AuthorizeRequest("pages/a", op, 2, document, user, user, "c", None, "op")
        result: Rejection | None = asyncio.run(rules.authorize(request))
        return result

    assert ask(Delta().retain(85).insert("!")) is None
    assert ask(Delta().retain(80).insert("x")) is None  # right after the title
    assert ask(Delta().retain(3).delete(1)) == Rejection(
        "locked", "the title is locked; ask an editor"
    )
    assert ask(Delta().retain(79).retain(2, {"bold": True})) is not None
    assert ask(Delta().retain(3).delete(1), user="ada") is None
    too_long = ask(Delta().insert("x" * 20_000), user="ada")
    assert too_long is not None and too_long.code == "max_length"

"""The replica mirrors deltas exactly, merges Yjs updates into code-point deltas, replays."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from pycrdt import Doc, Text, merge_updates
from tests.property.strategies import document_and_sequential_ops

from tandem.merge.replica import Replica, ReplicaError, UpdateRefused
from tandem.merge.replica import _decode_state_vector as decode_sv
from tandem.merge.translate import delta_from_event, utf8_length
from tandem.merge.updates import clock_ends
from tandem.ot.delta import Delta
from tandem.ot.document import Document


@settings(max_examples=150, deadline=None)
@given(document_and_sequential_ops(4))
def test_replica_content_equals_the_document_after_any_ops(
    case: tuple[Document, list[Delta]],
) -> None:
    document, ops = case
    replica = Replica.seeded(document, 0)
    assert replica.content() == document.to_delta()
    for version, op in enumerate(ops, 1):
        replica.apply(op, version)
        document = document.apply(op)
        assert replica.plain == document.text()
        assert replica.content() == document.to_delta()
    # The stored state reloads to the same content.
    assert Replica(replica.state(), len(ops)).content() == document.to_delta()


def test_replaying_ops_is_byte_identical_even_when_negating_several_attributes() -> None:
    """Every op is stored with the update it made; replaying those bytes is exact.

    (Re-applying the *deltas* is not: an insert negating two or more inherited
    attributes makes Yrs emit format markers in hash-map order.)
    """
    ops = [
        Delta().insert("ab", {"bold": 1, "italic": "red"}),
        Delta().retain(1).insert("plain"),
        Delta().retain(3).insert("x", {"bold": 1, "italic": "red", "underline": True}),
        Delta().retain(4).insert("y"),
    ]
    primary = Replica()
    updates = [primary.apply(op, version) for version, op in enumerate(ops, 1)]
    states = {primary.state()}
    for _ in range(8):
        replica = Replica()
        for version, (op, update) in enumerate(zip(ops, updates, strict=True), 1):
            replica.replay(update, version, op)
        assert replica.plain == primary.plain
        assert replica.content() == primary.content()
        states.add(replica.state())
    assert len(states) == 1
    # From a snapshot in the middle, too (a restart after a snapshot).
    middle = Replica()
    for version, (op, update) in enumerate(zip(ops[:2], updates[:2], strict=True), 1):
        middle.replay(update, version, op)
    resumed = Replica(middle.state(), 2)
    for version, (op, update) in enumerate(zip(ops[2:], updates[2:], strict=True), 3):
        resumed.replay(update, version, op)
    assert resumed.state() == primary.state()


@settings(max_examples=100, deadline=None)
@given(document_and_sequential_ops(3))
def test_a_merged_yjs_update_becomes_the_delta_that_reproduces_it(
    case: tuple[Document, list[Delta]],
) -> None:
    document, ops = case
    server = Replica.seeded(document, 0)
    author = Replica(server.state(), 0)  # a "Yjs client" holding the same items
    author.doc.client_id  # noqa: B018 - a different id is set below
    peer: Doc[Any] = Doc(client_id=99)
    peer.apply_update(server.state())
    text = peer.get("content", type=Text)
    for op in ops:
        before = peer.get_state()
        mirror = Replica(peer.get_update(), 0)
        # Apply through a replica-like path on the peer doc, then merge on the server.
        from tandem.merge.plaintext import PlainText
        from tandem.merge.translate import apply_delta

        with peer.transaction():
            apply_delta(text, None, PlainText(str(text)), op)
        delta, effective = server.merge(peer.get_update(before))
        document = document.apply(delta)
        assert server.content() == document.to_delta()
        assert str(text) == document.text()
        assert effective != b"" and mirror is not None


def test_delta_from_event_converts_utf8_bytes_to_code_points() -> None:
    old = "a😀é"
    changes = [{"retain": 5}, {"delete": 2}, {"insert": "𝄞", "attributes": {"size": 2.0}}]
    assert delta_from_event(old, changes) == Delta().retain(2).delete(1).insert("𝄞", {"size": 2})
    assert utf8_length("a😀é") == 7


def test_duplicate_and_dependent_updates() -> None:
    server = Replica.seeded(Delta().insert("x"), 1)
    peer: Doc[Any] = Doc(client_id=5)
    peer.apply_update(server.state())
    text = peer.get("content", type=Text)
    text.insert(1, "a")
    first = peer.get_update(server.state_vector())
    sv = peer.get_state()
    text.insert(2, "b")
    second = peer.get_update(sv)
    assert server.merge(first)[0] == Delta().retain(1).insert("a")
    assert server.merge(first) == (Delta(), b"\x00\x00")
    assert server.merge(second)[0] == Delta().retain(2).insert("b")


def test_updates_under_the_server_client_id_are_refused() -> None:
    server = Replica.seeded(Delta().insert("x"), 1)
    forged = Replica(server.state(), 1)
    sv = forged.state_vector()
    forged.apply(Delta().insert("y"), 2)
    with pytest.raises(ReplicaError):
        server.merge(forged.doc.get_update(sv))


def test_an_update_with_missing_dependencies_is_refused() -> None:
    """Yrs would keep it pending (an unrecorded state); pycrdt's get_state() says {} for it."""
    author: Doc[Any] = Doc(client_id=50)
    text = author.get("content", type=Text)
    text.insert(0, "hé😀", {"bold": True})
    first = author.get_update()
    before = author.get_state()
    text.insert(3, "X")  # UTF-8 byte 3: after "hé"
    second = author.get_update(before)
    with pytest.raises(ReplicaError, match="depends on changes"):
        Replica().merge(second)
    # A delete of items the replica never saw is refused too.
    before = author.get_state()
    del text[0:1]
    with pytest.raises(ReplicaError, match="depends on changes"):
        Replica().merge(author.get_update(before))
    replica = Replica()
    replica.merge(first)
    delta, _ = replica.merge(second)
    assert delta == Delta().retain(2).insert("X", {"bold": True})


def test_clock_ends_reads_every_struct_and_the_delete_set() -> None:
    doc: Doc[Any] = Doc(client_id=9)
    text = doc.get("content", type=Text)
    text.insert(0, "a😀b")
    text.format(0, 2, {"italic": True, "size": 12})
    del text[0:1]
    assert clock_ends(doc.get_update()) == {9: decode_sv(doc.get_state())[9]}


def test_a_refused_update_leaves_the_replica_untouched() -> None:
    """Refused before applying, even when part of it could be integrated: no rebuild needed."""
    server = Replica.seeded(Delta().insert("base"), 1)
    peer: Doc[Any] = Doc(client_id=7)
    peer.apply_update(server.state())
    sv = peer.get_state()
    peer.get("content", type=Text).insert(4, "!")
    fits = peer.get_update(sv)
    stranger: Doc[Any] = Doc(client_id=8)
    text = stranger.get("content", type=Text)
    text.insert(0, "abc")
    before = stranger.get_state()
    text.insert(1, "X")
    lacking = stranger.get_update(before)
    state, plain = server.state(), server.plain
    with pytest.raises(UpdateRefused, match="depends on changes"):
        server.merge(merge_updates(fits, lacking))
    assert server.state() == state and server.plain == plain
    assert server.merge(fits)[0] == Delta().retain(4).insert("!")


def test_an_update_ahead_of_a_peers_catch_up_shows_text_where_it_is_not() -> None:
    """Why a Yjs peer gets no Update before its SyncStep2 (issue #5, the token split).

    A token is bolded in part (format items inside it), then deleted; the next
    insert lands among its tombstones. A peer that gets that insert without
    the delete shows it *inside* the old token, and a peer editing that view
    edits where the text is not. Given its catch-up first, it never does.
    """
    server = Replica()
    server.apply(Delta().insert("‹1›"), 1)
    server.apply(Delta().retain(1).retain(1, {"bold": True}), 2)
    at_2 = server.state()
    behind: Doc[Any] = Doc(client_id=1000)
    behind.apply_update(at_2)
    state = behind.get_state()
    server.apply(Delta().delete(3), 3)
    live = server.apply(Delta().insert("‹2›", {"bold": True}), 4)

    early: Doc[Any] = Doc(client_id=1001)
    early.apply_update(at_2)
    early.apply_update(live)  # the Update before the catch-up
    assert str(early.get("content", type=Text)) == "‹1‹2››"

    behind.apply_update(server.diff(state))  # the SyncStep2 first
    assert str(behind.get("content", type=Text)) == "‹2›"
    behind.apply_update(live)  # then Updates: a duplicate here
    assert str(behind.get("content", type=Text)) == server.plain == "‹2›"

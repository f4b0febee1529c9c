"""The client state machine of docs/protocol.md, driven by hand: no event loop, no network."""

from __future__ import annotations

from typing import Any

import pytest

from tandem.client.state import ClientState, Status, VersionGap
from tandem.errors import OperationTooLong, ProtocolError
from tandem.ot import Delta, Document, apply, transform
from tandem.sequencer import Commit, Duplicate, Sequencer


def op_of(message: dict[str, Any] | None) -> Delta:
    assert message is not None and message["type"] == "op"
    return Delta.from_json(message["op"])


def state(text: str = "Hi", version: int = 4, client: str = "me") -> ClientState:
    return ClientState("notes", client, content=text, version=version)


# -- the three states --------------------------------------------------------


def test_starts_synchronized() -> None:
    s = state()
    assert s.status is Status.SYNCHRONIZED and s.synchronized
    assert s.text == "Hi" and s.version == 4
    assert s.resend() is None


def test_local_edit_sends_then_buffers_then_ack_sends_the_buffer() -> None:
    s = state()
    first = s.local_edit(Delta().retain(2).insert("!"))
    assert first == {
        "type": "op",
        "doc": "notes",
        "v": 4,
        "seq": 1,
        "op": [{"retain": 2}, {"insert": "!"}],
    }
    assert s.status is Status.AWAITING_ACK
    assert s.local_edit(Delta().retain(3).insert("?")) is None
    assert s.local_edit(Delta().insert(">")) is None
    assert s.status is Status.AWAITING_ACK_WITH_BUFFER
    assert s.text == ">Hi!?"
    assert s.buffer == Delta().insert(">").retain(3).insert("?")

    second = s.receive_ack(1, 5)
    assert s.version == 5 and s.status is Status.AWAITING_ACK
    assert second is not None and second["seq"] == 2 and second["v"] == 5
    assert op_of(second) == Delta().insert(">").retain(3).insert("?")
    assert s.confirmed.text() == "Hi!"

    assert s.receive_ack(2, 6) is None
    assert s.synchronized and s.version == 6 and s.confirmed.text() == ">Hi!?"


def test_empty_edits_are_ignored() -> None:
    s = state()
    assert s.local_edit(Delta()) is None
    assert s.synchronized and s.next_seq == 1


def test_an_edit_past_the_end_raises_and_changes_nothing() -> None:
    s = state()
    with pytest.raises(OperationTooLong):
        s.local_edit(Delta().retain(3).insert("x"))
    assert s.synchronized and s.text == "Hi"


# -- the worked example of docs/protocol.md -----------------------------------------


def test_worked_example_from_the_protocol() -> None:
    alice = state(client="a1")
    bob = state(client="b1")
    to_server_a = alice.local_edit(Delta().retain(2).insert("!"))
    to_server_b = bob.local_edit(Delta().retain(2).insert("?"))
    assert to_server_a is not None and to_server_a["v"] == 4 and to_server_a["seq"] == 1
    assert to_server_b is not None and to_server_b["v"] == 4 and to_server_b["seq"] == 1

    # The server commits Alice's as 5 and Bob's, transformed "right", as 6.
    bob_committed = transform(op_of(to_server_b), op_of(to_server_a), "right")
    assert bob_committed.to_json() == [{"retain": 3}, {"insert": "?"}]

    assert alice.receive_ack(1, 5) is None
    assert bob.receive_op(5, op_of(to_server_a), "a1").to_json() == [
        {"retain": 2},
        {"insert": "!"},
    ]
    assert bob.text == "Hi!?"
    assert bob.inflight is not None
    assert bob.inflight.op.to_json() == [{"retain": 3}, {"insert": "?"}]
    assert bob.receive_ack(1, 6) is None
    assert alice.receive_op(6, bob_committed, "b1").to_json() == [{"retain": 3}, {"insert": "?"}]

    for client in (alice, bob):
        assert client.text == "Hi!?" and client.version == 6 and client.synchronized
        assert client.confirmed == Document("Hi!?")


# -- remote ops ----------------------------------------------------------------------


def test_remote_op_is_transformed_against_inflight_then_buffer() -> None:
    s = state("abc", 0)
    s.local_edit(Delta().insert("X"))  # in flight: X at 0
    s.local_edit(Delta().retain(4).insert("Y"))  # buffer: Y at the end
    assert s.text == "XabcY"
    applied = s.receive_op(1, Delta().retain(1).insert("-"), "other")
    assert applied == Delta().retain(2).insert("-")
    assert s.text == "Xa-bcY"
    assert s.confirmed == Document("a-bc")
    assert s.inflight is not None and s.inflight.op == Delta().insert("X")
    assert s.buffer == Delta().retain(5).insert("Y")
    # Resends repeat the op as first sent, at its original base version.
    resent = s.resend()
    assert resent is not None and resent["v"] == 0 and op_of(resent) == Delta().insert("X")


def test_remote_insert_at_the_same_place_goes_before_pending_ones() -> None:
    s = state("ab", 0)
    s.local_edit(Delta().retain(1).insert("mine"))
    s.receive_op(1, Delta().retain(1).insert("theirs"), "other")
    assert s.text == "atheirsmineb"


def test_version_gap_raises_and_changes_nothing() -> None:
    s = state()
    with pytest.raises(VersionGap) as info:
        s.receive_op(6, Delta().insert("x"))
    assert (info.value.expected, info.value.got) == (5, 6)
    assert info.value.code == "ERR_BAD_VERSION"
    with pytest.raises(VersionGap):
        s.receive_op(4, Delta().insert("x"))
    assert s.text == "Hi" and s.version == 4


# -- acks --------------------------------------------------------------------------


def test_duplicate_ack_is_ignored() -> None:
    s = state()
    s.local_edit(Delta().insert("a"))
    s.receive_ack(1, 5)
    s.local_edit(Delta().insert("b"))
    assert s.receive_ack(1, 5) is None  # a second delivery of the first ack
    assert s.inflight is not None and s.inflight.seq == 2 and s.version == 5


def test_ack_of_nothing_in_flight_is_a_protocol_error() -> None:
    s = state()
    with pytest.raises(ProtocolError):
        s.receive_ack(1, 5)
    s.local_edit(Delta().insert("a"))
    with pytest.raises(ProtocolError):
        s.receive_ack(7, 5)


def test_ack_that_skips_versions_is_a_gap() -> None:
    s = state()
    s.local_edit(Delta().insert("a"))
    with pytest.raises(VersionGap):
        s.receive_ack(1, 9)


def test_noop_ack_at_the_current_version() -> None:
    s = state("abc", 0)
    s.local_edit(Delta().retain(1).delete(1))
    s.receive_op(1, Delta().delete(3), "other")  # someone deleted it all first
    assert s.inflight is not None and s.inflight.op == Delta()
    assert s.receive_ack(1, 1) is None
    assert s.synchronized and s.version == 1 and s.text == ""


# -- errors, snapshots -----------------------------------------------------------------


def test_discard_pending_undoes_them_locally() -> None:
    s = state("abc", 3)
    s.local_edit(Delta().insert("X"))
    s.local_edit(Delta().retain(2).delete(1))
    undo = s.discard_pending()
    assert s.synchronized and s.text == "abc"
    assert apply("Xac", undo) == Document("abc")


def test_snapshot_replaces_everything() -> None:
    s = state("abc", 3)
    s.local_edit(Delta().insert("X"))
    change = s.load_snapshot(10, Delta().insert("new", {"bold": True}))
    assert apply("Xabc", change) == Document(Delta().insert("new", {"bold": True}))
    assert s.synchronized and s.version == 10 and s.confirmed == s.document


# -- reconnect: catch-up and resend against the real sequencer -----------------------


def entry_dicts(seq: Sequencer, since: int) -> list[dict[str, Any]]:
    return [
        {"v": e.version, "op": e.op.to_json(), "client": e.client_id, "user": e.user, "seq": e.seq}
        for e in seq.entries_since(since)
    ]


def submit(server: Sequencer, message: dict[str, Any], client: str) -> Commit | Duplicate:
    decision = server.submit(
        op_of(message), message["v"], client_id=client, seq=message["seq"], user=client, now=0.0
    )
    assert not isinstance(decision, type(None))
    return decision  # type: ignore[return-value]


def test_catchup_recognises_own_committed_op_as_ack() -> None:
    server = Sequencer("notes", Document("Hi"), 0)
    me = ClientState("notes", "me", content="Hi", version=0)
    message = me.local_edit(Delta().retain(2).insert("!"))
    assert message is not None
    server.submit(Delta().insert(">"), 0, client_id="other", seq=1, user="o", now=0.0)
    assert isinstance(submit(server, message, "me"), Commit)  # committed, ack lost
    me.local_edit(Delta().insert("<"))  # typed while disconnected: buffered
    server.submit(Delta().retain(1).insert("~"), 2, client_id="other", seq=2, user="o", now=0.0)

    change = me.catchup(entry_dicts(server, me.version))
    assert me.version == 3
    # ">" lands before our buffered "<", and "~" (at 1, right after ">") before it too.
    assert change == Delta().insert(">~")
    assert me.text == ">~<Hi!"
    # The buffer became the in-flight op; resend sends it, it is new to the server.
    resent = me.resend()
    assert resent is not None and resent["seq"] == 2 and resent["v"] == 2
    assert isinstance(submit(server, resent, "me"), Commit)
    me.receive_ack(2, server.version)
    assert me.document == server.document and me.synchronized


def test_resend_after_reconnect_is_deduplicated() -> None:
    server = Sequencer("notes", Document("Hi"), 0)
    me = ClientState("notes", "me", content="Hi", version=0)
    message = me.local_edit(Delta().insert("A"))
    assert message is not None
    first = submit(server, message, "me")
    assert isinstance(first, Commit)
    # Reconnect before the catch-up saw it: the resend is a duplicate, acked again.
    again = submit(server, me.resend() or {}, "me")
    assert again == Duplicate(1)
    me.receive_ack(1, again.version)
    assert me.synchronized and me.document == server.document
    assert me.receive_ack(1, 1) is None  # and the original ack, late, is ignored


def test_catchup_skips_entries_already_applied() -> None:
    server = Sequencer("notes", Document(""), 0)
    me = ClientState("notes", "me", version=0)
    server.submit(Delta().insert("a"), 0, client_id="o", seq=1, user="o", now=0.0)
    server.submit(Delta().insert("b"), 1, client_id="o", seq=2, user="o", now=0.0)
    me.receive_op(1, Delta().insert("a"), "o")
    me.catchup(entry_dicts(server, 0))
    assert me.text == "ba" and me.version == 2


# -- cursors ----------------------------------------------------------------------------


def test_remote_cursor_moves_through_pending_ops() -> None:
    s = state("hello", 0)
    s.local_edit(Delta().insert("XX"))  # in flight
    s.local_edit(Delta().retain(4).insert("Y"))  # buffer, inside the remote selection
    # A remote caret at 2 and a selection [1, 4) at version 0.
    assert s.transform_remote_cursor(2) == (4, 0)
    assert s.transform_remote_cursor(1, 3) == (3, 4)
    # Our insert exactly at the remote caret leaves the caret before it.
    assert s.transform_remote_cursor(0) == (0, 0)


def test_remote_cursor_from_an_older_version_moves_through_history() -> None:
    s = state("hello", 0)
    s.receive_op(1, Delta().insert("ab"), "bob")
    s.receive_op(2, Delta().retain(7).insert("!"), "carol")
    # Bob's caret at 0, sent at version 0: his own insert pushed it along.
    assert s.transform_remote_cursor(0, version=0, client="bob") == (2, 0)
    assert s.transform_remote_cursor(0, version=0, client="carol") == (0, 0)
    assert s.transform_remote_cursor(5, version=1) == (5, 0)
    assert s.transform_remote_cursor(99) == (8, 0)  # clamped


def test_presence_message_sends_the_cursor_at_the_confirmed_version() -> None:
    s = state("hello", 3)
    assert s.presence_message((1, 2), {"color": "red"}) == {
        "type": "presence",
        "doc": "notes",
        "v": 3,
        "cursor": {"index": 1, "length": 2},
        "state": {"color": "red"},
    }
    s.local_edit(Delta().insert("abc"))
    # Our caret after our own pending insert is sent where the insert starts.
    message = s.presence_message((5, 0))
    assert message["cursor"] == {"index": 2, "length": 0} and message["v"] == 3
    assert "state" not in message
    assert s.presence_message(None)["cursor"] is None


def test_remote_cursors_are_tracked_through_every_server_op() -> None:
    s = state("hello", 0, client="me")
    s.set_remote_cursor("bob", (5, 0))
    s.set_remote_cursor("carol", (1, 2))
    s.set_remote_cursor("dave", None)
    for version in range(1, HISTORY_SPAN):
        s.receive_op(version, Delta().insert("x"), "zed")
    # Far more ops than the history keeps: the cursors still moved through all of them.
    moved = HISTORY_SPAN - 1
    assert s.remote_cursor("bob") == (5 + moved, 0)
    assert s.remote_cursor("carol") == (1 + moved, 2)
    assert s.remote_cursor("dave") is None
    # Bob's own insert at his caret pushes it; our pending insert there does not.
    s.receive_op(HISTORY_SPAN, Delta().retain(5 + moved).insert("B"), "bob")
    s.local_edit(Delta().retain(6 + moved).insert("me"))
    assert s.remote_cursor("bob") == (6 + moved, 0)
    # Our acked op moves them too.
    s.receive_ack(1, HISTORY_SPAN + 1)
    s.set_remote_cursor("erin", (0, 0), version=HISTORY_SPAN)
    assert s.remote_cursor("erin") == (0, 0)
    s.forget_remote_cursor("bob")
    assert s.remote_cursor("bob") is None
    s.load_snapshot(0, Delta())
    assert s.remote_cursor("carol") is None


HISTORY_SPAN = 400

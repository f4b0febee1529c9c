"""Carrying unacknowledged edits over to a snapshot of another history (tandem.client.carryover)."""

from __future__ import annotations

from tandem.client.carryover import carry_over
from tandem.client.state import ClientState
from tandem.ot import Delta, Document


def _typing(text: str, version: int) -> ClientState:
    return ClientState("d", "c1", content=Document(text), version=version)


def test_pending_edits_are_merged_into_the_new_text() -> None:
    state = _typing("hello world", 80)
    first = state.local_edit(Delta().retain(5).insert(","))
    assert first is not None and first["seq"] == 1
    assert state.local_edit(Delta().retain(12).insert("!")) is None  # buffered
    change, message = carry_over(state, 50, Delta().insert("hello there world"), None)
    assert state.text == "hello, there world!"
    assert state.confirmed == Document("hello there world") and state.version == 50
    assert message is not None and message["v"] == 50 and message["seq"] == 2
    assert Document("hello there world").apply(Delta.from_json(message["op"])).text() == (
        "hello, there world!"
    )
    assert Document("hello, world!").apply(change) == state.document


def test_an_inflight_op_the_snapshot_holds_is_not_sent_again() -> None:
    state = _typing("ab", 7)
    assert state.local_edit(Delta().insert("X")) is not None  # seq 1, committed (last_seq)
    state.local_edit(Delta().retain(3).insert("Y"))  # buffered, not committed
    _, message = carry_over(state, 3, Delta().insert("Xab"), 1)
    assert state.text == "XabY"
    assert message is not None and message["seq"] == 2


def test_nothing_pending_is_a_plain_snapshot() -> None:
    state = _typing("old", 9)
    change, message = carry_over(state, 4, Delta().insert("new"), None)
    assert message is None and state.synchronized and state.text == "new"
    assert Document("old").apply(change).text() == "new"

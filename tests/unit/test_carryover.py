"""Carrying unacknowledged edits over to a snapshot of another history (tandem.client.carryover)."""

from __future__ import annotations

import asyncio

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


def test_a_merge_in_flight_is_carried_over_onto_another_incarnation_only() -> None:
    asyncio.run(_merge_in_flight_and_incarnations())


async def _merge_in_flight_and_incarnations() -> None:
    """A snapshot of the same incarnation keeps the pending merge (it may be committed);
    one of another incarnation (a restore) carries it over: its base counts in the old
    history."""
    from tandem.client import TandemClient
    from tandem.client.document import DocumentHandle

    client = TandemClient("ws://127.0.0.1:9/collab", "t", client_id="me")  # never connected
    snapshot = {"type": "snapshot", "doc": "d", "v": 90, "content": [{"insert": "abXYZ"}]}
    for incarnation, merging_kept in (("old", True), ("new", False)):
        handle = DocumentHandle(client, "d")
        state = handle._state = _typing("abcdef", 80)
        state.local_edit(Delta().retain(6).insert("!"))
        state._begin_merge()
        handle.incarnation = "old"
        client._snapshot(handle, {**snapshot, "i": incarnation, "last_seq": None})
        assert (state.merging is not None) is merging_kept
        if not merging_kept:
            assert state.text == "abXYZ!" and state.version == 90
            assert state.inflight is not None and state.inflight.op == Delta().retain(5).insert("!")
            assert handle.incarnation == "new"

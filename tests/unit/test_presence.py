"""The pure presence table: no event loop, no sleeps; time is passed in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tandem.errors import ProtocolError
from tandem.ot import Delta, Document, transform_position
from tandem.presence import PresenceTable
from tandem.protocol import Cursor


def table_with(*clients: str, cursor: Cursor | None = None, length: int = 10) -> PresenceTable:
    table = PresenceTable()
    for client in clients:
        table.update(
            client, f"u-{client}", client.upper(), cursor, None, 0.0, version=1, length=length
        )
    return table


# -- update ---------------------------------------------------------------------


def test_update_creates_an_entry_in_wire_form() -> None:
    table = PresenceTable()
    table.update(
        "c1", "alice", "Alice", Cursor(2, 3), {"color": "#e91e63"}, 5.0, version=4, length=10
    )
    assert "c1" in table and len(table) == 1
    assert table.snapshot() == [
        {
            "client": "c1",
            "user": "alice",
            "name": "Alice",
            "cursor": {"index": 2, "length": 3},
            "state": {"color": "#e91e63"},
            "v": 4,
        }
    ]


def test_state_none_keeps_the_previous_state() -> None:
    table = PresenceTable()
    table.update("c1", "alice", "Alice", None, {"color": "red"}, 0.0, version=0, length=0)
    table.update("c1", "alice", "Alice", Cursor(0), None, 1.0, version=0, length=0)
    entry = table.get("c1")
    assert entry is not None
    assert entry.state == {"color": "red"}
    assert entry.cursor == Cursor(0, 0)


def test_a_new_entry_without_state_has_an_empty_state() -> None:
    table = table_with("c1")
    assert table.snapshot()[0]["state"] == {}
    assert table.snapshot()[0]["cursor"] is None


def test_state_is_copied_not_aliased() -> None:
    state = {"color": "red"}
    table = PresenceTable()
    table.update("c1", "alice", "Alice", None, state, 0.0, version=0, length=0)
    state["color"] = "blue"
    assert table.snapshot()[0]["state"] == {"color": "red"}


@pytest.mark.parametrize(
    ("cursor", "length", "words"),
    [
        (Cursor(11), 10, "past the end"),
        (Cursor(8, 3), 10, "past the end"),
        (Cursor(-1), 10, "index must be a non-negative integer"),
        (Cursor(0, -2), 10, "length must be a non-negative integer"),
        (Cursor(1.5, 0), 10, "index must be a non-negative integer"),  # type: ignore[arg-type]
        (Cursor(True, 0), 10, "index must be a non-negative integer"),
        ({"index": 1, "length": 0}, 10, "must be"),
    ],
)
def test_invalid_cursors_raise_protocol_error(cursor: object, length: int, words: str) -> None:
    table = PresenceTable()
    with pytest.raises(ProtocolError, match=words):
        table.update("c1", "alice", "Alice", cursor, None, 0.0, version=0, length=length)  # type: ignore[arg-type]
    assert "c1" not in table


def test_cursor_at_the_very_end_is_valid() -> None:
    table = PresenceTable()
    table.update("c1", "alice", "Alice", Cursor(10), None, 0.0, version=0, length=10)
    table.update("c2", "bob", "Bob", Cursor(4, 6), None, 0.0, version=0, length=10)
    assert len(table) == 2


# -- transform ------------------------------------------------------------------


def cursor_of(table: PresenceTable, client: str) -> Cursor | None:
    entry = table.get(client)
    assert entry is not None
    return entry.cursor


def test_insert_at_a_caret_pushes_only_the_authors_caret() -> None:
    table = table_with("author", "other", cursor=Cursor(3))
    table.transform(Delta().retain(3).insert("ab"), "author")
    assert cursor_of(table, "author") == Cursor(5)
    assert cursor_of(table, "other") == Cursor(3)


def test_insert_before_a_caret_moves_everyone() -> None:
    table = table_with("author", "other", cursor=Cursor(3))
    table.transform(Delta().retain(1).insert("ab"), "author")
    assert cursor_of(table, "author") == Cursor(5)
    assert cursor_of(table, "other") == Cursor(5)


def test_delete_around_a_caret_moves_it_to_the_start() -> None:
    table = table_with("a", cursor=Cursor(5))
    table.transform(Delta().retain(2).delete(6), "b")
    assert cursor_of(table, "a") == Cursor(2)


def test_selection_shrinks_under_a_delete_and_never_grows_at_its_end() -> None:
    table = table_with("a", cursor=Cursor(2, 4))  # [2, 6)
    table.transform(Delta().retain(6).insert("xyz"), "b")
    assert cursor_of(table, "a") == Cursor(2, 4)
    table.transform(Delta().retain(3).delete(2), "b")
    assert cursor_of(table, "a") == Cursor(2, 2)


def test_transform_advances_versions_and_keeps_none_cursors() -> None:
    table = table_with("a", "b")
    table.update("a", "u-a", "A", Cursor(1), None, 0.0, version=1, length=10)
    table.transform(Delta().insert("x"), None)
    table.transform(Delta().insert("y"), None, version=7)
    assert [e["v"] for e in table.snapshot()] == [7, 7]
    assert cursor_of(table, "b") is None
    assert cursor_of(table, "a") == Cursor(3)


def test_a_cursor_set_after_an_op_is_not_moved_by_it_again() -> None:
    """Another node relayed a cursor at version 5 before this node applied op 5 (the
    owner's op and another node's presence come by different publishers)."""
    table = PresenceTable()
    table.update("a", "u-a", "A", Cursor(4), None, 0.0, version=5, length=10)
    table.transform(Delta().insert("xy"), "b", version=5)  # already reflected
    assert cursor_of(table, "a") == Cursor(4)
    table.transform(Delta().insert("xy"), "b", version=6)  # a later op moves it
    assert cursor_of(table, "a") == Cursor(6)
    assert [e["v"] for e in table.snapshot()] == [6]


def test_transform_does_not_make_an_entry_pending() -> None:
    table = table_with("a", cursor=Cursor(1))
    table.mark_sent("a", 0.0)
    table.transform(Delta().insert("x"), "b")
    assert table.due(10.0, 0.05) == []
    assert table.next_due(10.0, 0.05) is None


# -- remove / expire ------------------------------------------------------------


def test_remove() -> None:
    table = table_with("a", "b")
    assert table.remove("a") is True
    assert table.remove("a") is False
    assert [e.client for e in table] == ["b"]


def test_expire_removes_only_the_silent() -> None:
    table = PresenceTable()
    table.update("quiet", "u", "U", None, None, 0.0, version=0, length=0)
    table.update("chatty", "v", "V", None, None, 0.0, version=0, length=0)
    table.touch("chatty", 20.0)
    table.touch("nobody", 20.0)  # unknown clients are ignored
    assert table.expire(30.0, 30.0) == []  # exactly 30 s is not *more than* 30 s
    assert table.expire(30.5, 30.0) == ["quiet"]
    assert "chatty" in table and "quiet" not in table
    table.update("chatty", "v", "V", Cursor(0), None, 55.0, version=0, length=0)
    assert table.expire(80.0, 30.0) == []
    assert table.expire(85.1, 30.0) == ["chatty"]
    assert len(table) == 0


def test_touch_never_moves_last_seen_backwards() -> None:
    table = table_with("a")
    table.touch("a", 10.0)
    table.touch("a", 5.0)
    assert table.expire(39.0, 30.0) == []


# -- coalescing -------------------------------------------------------------------


def test_a_new_entry_is_due_at_once() -> None:
    table = table_with("a")
    assert table.due(0.0, 0.05) == ["a"]
    assert table.next_due(0.0, 0.05) == 0.0


def test_at_most_one_broadcast_per_interval_with_the_latest_value() -> None:
    table = PresenceTable()
    interval = 0.05
    table.update("a", "u", "U", Cursor(0), None, 0.0, version=0, length=10)
    assert table.due(0.0, interval) == ["a"]
    table.mark_sent("a", 0.0)
    assert table.due(0.0, interval) == []
    # A burst of moves within the interval: nothing due until it has passed.
    for i, now in enumerate((0.01, 0.02, 0.03), start=1):
        table.update("a", "u", "U", Cursor(i), None, now, version=0, length=10)
        assert table.due(now, interval) == []
    assert table.next_due(0.03, interval) == pytest.approx(0.02)
    assert table.due(0.05, interval) == ["a"]
    assert table.entry_message("a", "notes")["cursor"] == {"index": 3, "length": 0}
    table.mark_sent("a", 0.05)
    assert table.due(1.0, interval) == []
    assert table.next_due(1.0, interval) is None


def test_an_unchanged_update_is_not_rebroadcast() -> None:
    table = PresenceTable()
    table.update("a", "u", "U", Cursor(1), {"c": 1}, 0.0, version=2, length=5)
    table.mark_sent("a", 0.0)
    table.update("a", "u", "U", Cursor(1), None, 1.0, version=2, length=5)
    table.update("a", "u", "U", Cursor(1), {"c": 1}, 2.0, version=2, length=5)
    assert table.due(3.0, 0.05) == []


def test_next_due_is_the_earliest_of_several() -> None:
    table = PresenceTable()
    for client, sent in (("a", 0.00), ("b", 0.02)):
        table.update(client, "u", "U", None, None, sent, version=0, length=0)
        table.mark_sent(client, sent)
        table.update(client, "u", "U", Cursor(0), None, sent, version=0, length=0)
    assert table.next_due(0.03, 0.05) == pytest.approx(0.02)
    assert table.due(0.05, 0.05) == ["a"]
    table.mark_sent("a", 0.05)
    assert table.next_due(0.05, 0.05) == pytest.approx(0.02)
    assert table.due(0.07, 0.05) == ["b"]


def test_mark_sent_of_an_unknown_client_is_ignored() -> None:
    table = PresenceTable()
    table.mark_sent("ghost", 1.0)
    assert table.next_due(1.0, 0.05) is None


# -- wire messages -------------------------------------------------------------


def test_entry_and_left_messages_follow_the_protocol() -> None:
    table = PresenceTable()
    table.update("c-1", "alice", "Alice", Cursor(1, 2), {"color": "red"}, 0.0, version=9, length=5)
    assert table.entry_message("c-1", "notes") == {
        "type": "presence",
        "doc": "notes",
        "client": "c-1",
        "user": "alice",
        "name": "Alice",
        "v": 9,
        "cursor": {"index": 1, "length": 2},
        "state": {"color": "red"},
    }
    assert table.left_message("c-1", "alice", "notes") == {
        "type": "presence",
        "doc": "notes",
        "client": "c-1",
        "user": "alice",
        "left": True,
    }
    with pytest.raises(KeyError):
        table.entry_message("nobody", "notes")


# -- property: the table agrees with transform_position ---------------------------

ALPHABET = "ab😀\n"


@st.composite
def document_and_op(draw: st.DrawFn) -> tuple[str, Delta]:
    """A document text and a random op that applies to it."""
    text = draw(st.text(alphabet=ALPHABET, max_size=20))
    kinds = draw(st.lists(st.sampled_from(["retain", "insert", "delete", "format"]), max_size=6))
    op = Delta()
    position = 0
    for kind in kinds:
        remaining = len(text) - position
        if kind == "insert":
            op.insert(draw(st.text(alphabet=ALPHABET, min_size=1, max_size=4)))
            continue
        if remaining == 0:
            continue
        count = draw(st.integers(1, remaining))
        if kind == "retain":
            op.retain(count)
        elif kind == "format":
            op.retain(count, {"bold": draw(st.sampled_from([True, None]))})
        else:
            op.delete(count)
        position += count
    return text, op.chop()


@given(
    document_and_op(),
    st.integers(0, 20),
    st.integers(0, 20),
    st.booleans(),
)
def test_table_cursors_agree_with_transform_position(
    case: tuple[str, Delta], raw_index: int, raw_length: int, own: bool
) -> None:
    text, op = case
    index = min(raw_index, len(text))
    length = min(raw_length, len(text) - index)
    table = PresenceTable()
    table.update("me", "u", "U", Cursor(index, length), None, 0.0, version=0, length=len(text))
    table.update("caret", "u", "U", Cursor(index, 0), None, 0.0, version=0, length=len(text))
    table.transform(op, "me" if own else "someone-else")
    new_length = len(Document(text).apply(op))

    caret = cursor_of(table, "caret")
    assert caret is not None
    assert caret.index == transform_position(index, op, "left")
    assert caret.length == 0

    selection = cursor_of(table, "me")
    assert selection is not None
    assert selection.index == transform_position(index, op, "right" if own else "left")
    assert selection.length >= 0
    for cursor in (caret, selection):
        assert cursor.index >= 0 and cursor.index + cursor.length <= new_length


# -- another node's presence (session/presence.py) -------------------------------


def test_a_relayed_cursor_behind_this_nodes_head_is_moved_up_to_it() -> None:
    """Presence relayed at version 1 arrives after this node applied op 2 (from the
    owner): the cursor is moved through op 2 and told to local members at version 2."""
    from types import SimpleNamespace

    import orjson

    from tandem.records import OpRecord
    from tandem.session.presence import PresenceFanout

    op2 = OpRecord("d", 2, Delta().insert("ab"), "other@u", 1, "u", 0.0)
    told: list[bytes] = []
    session = SimpleNamespace(
        doc="d",
        apply_relayed=lambda: None,
        sequencer=SimpleNamespace(entries_since=lambda v: [op2] if v < 2 else []),
        delivery=SimpleNamespace(committed_version=2, broadcast=lambda m, **_: told.append(m)),
    )
    fanout = PresenceFanout(session)  # type: ignore[arg-type]
    wire = {
        "type": "presence",
        "doc": "d",
        "client": "c",
        "user": "u",
        "name": "",
        "v": 1,
        "cursor": {"index": 3, "length": 0},
        "state": {},
    }
    fanout.remote(wire)
    assert orjson.loads(told[-1])["cursor"] == {"index": 5, "length": 0}
    assert orjson.loads(told[-1])["v"] == 2
    assert fanout.remote_table.snapshot()[0]["cursor"] == {"index": 5, "length": 0}
    # The same cursor relayed at version 2 (after op 2) is kept as it is.
    fanout.remote({**wire, "v": 2})
    assert orjson.loads(told[-1])["cursor"] == {"index": 3, "length": 0}

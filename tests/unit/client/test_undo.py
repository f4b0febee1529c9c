"""The pure undo manager: grouping, selection, and undo among other users' edits."""

from __future__ import annotations

from tandem.client.undo import UndoManager, caret_after, typing_of
from tandem.ot import Delta, Document, apply


def type_text(
    undo: UndoManager, doc: Document, at: int, text: str, *, now: float = 0.0
) -> Document:
    """Type ``text`` one character at a time at ``at``, 0.1 s apart."""
    for i, ch in enumerate(text):
        change = Delta().retain(at + i).insert(ch)
        undo.record(change, doc, now=now + i * 0.1)
        doc = apply(doc, change)
    return doc


def step(doc: Document, result: object) -> Document:
    assert result is not None
    return apply(doc, result.delta)  # type: ignore[attr-defined]


def test_typing_groups_into_words_and_pauses() -> None:
    undo = UndoManager()
    doc = type_text(undo, Document(), 0, "hello world")
    assert len(undo.undo_stack) == 2  # "hello " and "world"
    doc = type_text(undo, doc, 11, "!", now=5.0)  # after a pause
    assert len(undo.undo_stack) == 3
    result = undo.undo(doc)
    assert result is not None and result.selection == (11, 0)
    doc = step(doc, result)
    assert doc.text() == "hello world"
    doc = step(doc, undo.undo(doc))
    assert doc.text() == "hello "
    assert undo.can_redo
    doc = step(doc, undo.redo(doc))
    assert doc.text() == "hello world"
    doc = type_text(undo, doc, 0, "X", now=9.0)
    assert not undo.can_redo  # a new edit forgets what could be redone
    assert doc.text() == "Xhello world"


def test_only_plain_typing_at_one_place_groups() -> None:
    assert typing_of(Delta().retain(2).insert("a")) is not None
    assert typing_of(Delta().retain(2).insert("a\n")) is None
    assert typing_of(Delta().retain(2, {"bold": True})) is None
    assert typing_of(Delta().retain(2).delete(1).insert("x")) is None
    undo = UndoManager()
    doc = type_text(undo, Document(), 0, "abc")
    change = Delta().retain(1).insert("z")  # a jump elsewhere
    undo.record(change, doc, now=0.3)
    doc = apply(doc, change)
    assert len(undo.undo_stack) == 2
    for i in range(3):  # backspacing is one step
        change = Delta().retain(3 - i).delete(1)
        undo.record(change, doc, now=0.4 + i * 0.01)
        doc = apply(doc, change)
    assert doc.text() == "a"
    assert len(undo.undo_stack) == 3
    assert step(doc, undo.undo(doc)).text() == "azbc"
    assert caret_after(Delta().retain(3).delete(2)) == (3, 0)
    assert caret_after(Delta().retain(3, {"bold": True})) is None


def test_selection_is_restored_and_moved_by_remote_edits() -> None:
    undo = UndoManager()
    doc = Document("abc")
    change = Delta().retain(1).delete(1)
    undo.record(change, doc, selection=(1, 1))
    doc = apply(doc, change)
    remote = Delta().insert("XY")
    undo.transform(remote)
    doc = apply(doc, remote)
    result = undo.undo(doc, (3, 0))
    assert result is not None and result.selection == (3, 1)
    doc = apply(doc, result.delta)
    assert doc.text() == "XYabc"
    redo = undo.redo(doc)
    assert redo is not None and redo.selection == (3, 0)


def test_undo_keeps_their_text_and_does_not_bring_back_their_deletion() -> None:
    undo = UndoManager()
    doc = type_text(undo, Document(), 0, "hello")
    theirs = Delta().retain(2).insert("XY")
    undo.transform(theirs)
    doc = apply(doc, theirs)
    doc = step(doc, undo.undo(doc))
    assert doc.text() == "XY"
    doc = step(doc, undo.redo(doc))
    assert doc.text() == "heXYllo"

    undo = UndoManager()
    doc = Document("abcdef")
    mine = Delta().retain(1).delete(2)  # I delete "bc"
    undo.record(mine, lambda: doc)
    doc = apply(doc, mine)
    gone = Delta().delete(4)  # they delete "adef"
    undo.transform(gone)
    doc = apply(doc, gone)
    assert step(doc, undo.undo(doc)).text() == "bc"


def test_their_later_format_wins_over_our_undone_format() -> None:
    undo = UndoManager()
    doc = Document("abc")
    mine = Delta().retain(3, {"bold": True})
    undo.record(mine, doc)
    doc = apply(doc, mine)
    theirs = Delta().retain(3, {"bold": False})
    undo.transform(theirs)
    doc = apply(doc, theirs)
    assert not undo.can_undo  # our undo of the format would only have undone theirs


def test_emptied_entries_are_dropped_and_stacks_are_bounded() -> None:
    undo = UndoManager(max_stack=3)
    doc = Document()
    for i in range(5):
        doc = type_text(undo, doc, i, "x", now=i * 10.0)
    assert len(undo.undo_stack) == 3
    undo.transform(Delta().delete(5))
    assert not undo.can_undo
    assert undo.undo(doc) is None
    undo.cut()
    undo.clear()
    assert not undo.can_redo

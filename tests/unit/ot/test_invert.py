"""invert: undo inserts, deletes (with their formatting) and format changes."""

from __future__ import annotations

import pytest

from tandem.errors import OperationTooLong
from tandem.ot import Delta, Document, apply, invert


def test_insert_inverts_to_delete() -> None:
    assert invert(Delta().retain(2).insert("A😀"), "abc") == Delta().retain(2).delete(2)


def test_delete_inverts_to_the_formatted_text() -> None:
    base = Delta().insert("12").insert("345", {"bold": True}).insert("6")
    op = Delta().retain(1).delete(3)
    assert invert(op, base) == Delta().retain(1).insert("2").insert("34", {"bold": True})


def test_format_inverts_to_the_old_formatting() -> None:
    base = Delta().insert("ab", {"color": "red"}).insert("cd")
    op = Delta().retain(3, {"color": "blue", "bold": True})
    expected = (
        Delta().retain(2, {"color": "red", "bold": None}).retain(1, {"color": None, "bold": None})
    )
    assert invert(op, base) == expected


def test_removal_inverts_to_the_removed_value() -> None:
    base = Delta().insert("ab", {"bold": True, "size": 1})
    op = Delta().retain(1, {"bold": None})
    assert invert(op, base) == Delta().retain(1, {"bold": True})


def test_true_and_one_are_different_values() -> None:
    base = Delta().insert("a", {"bold": True})
    assert invert(Delta().retain(1, {"bold": 1}), base) == Delta().retain(1, {"bold": True})


def test_plain_retain_and_noop() -> None:
    assert invert(Delta().retain(2), "abc") == Delta()
    assert invert(Delta(), "") == Delta()


def test_round_trip_over_chunks() -> None:
    document = Document("x" * 5000 + "😀" * 3000)
    op = Delta().retain(100).delete(6000).insert("y").retain(10, {"bold": True})
    assert apply(apply(document, op), invert(op, document)) == document


def test_op_longer_than_the_base_raises() -> None:
    with pytest.raises(OperationTooLong):
        invert(Delta().retain(1).delete(5), "abc")

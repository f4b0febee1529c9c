"""transform_position / transform_selection: sides, deletes, code points."""

from __future__ import annotations

import pytest

from tandem.ot import Delta, transform_position, transform_selection


def test_insert_before_moves_the_cursor() -> None:
    assert transform_position(2, Delta().insert("A")) == 3
    assert transform_position(2, Delta().retain(1).insert("AB"), "right") == 4


def test_insert_after_does_not() -> None:
    assert transform_position(1, Delta().retain(2).insert("A"), "left") == 1
    assert transform_position(1, Delta().retain(2).insert("A"), "right") == 1


@pytest.mark.parametrize(("side", "expected"), [("left", 2), ("right", 3)])
def test_insert_exactly_at_the_cursor_depends_on_the_side(side: str, expected: int) -> None:
    assert transform_position(2, Delta().retain(2).insert("A"), side) == expected  # type: ignore[arg-type]


def test_default_side_is_left() -> None:
    assert transform_position(0, Delta().insert("A")) == 0


def test_deletes_before_across_and_after() -> None:
    assert transform_position(4, Delta().delete(2)) == 2
    assert transform_position(2, Delta().retain(1).delete(3)) == 1  # inside: to the start
    assert transform_position(2, Delta().retain(2).delete(3)) == 2
    assert transform_position(1, Delta().retain(3).delete(1)) == 1


def test_delete_and_insert_at_the_same_place() -> None:
    op = Delta().retain(1).insert("xy").delete(2)
    assert transform_position(2, op, "left") == 3
    assert transform_position(1, op, "left") == 1
    assert transform_position(1, op, "right") == 3


def test_positions_count_code_points() -> None:
    # "a😀b": the cursor after the emoji is 2, and an emoji insert moves it by one.
    assert transform_position(2, Delta().insert("😀")) == 3
    assert transform_position(2, Delta().retain(1).delete(1)) == 1


def test_no_op_and_formatting_do_not_move() -> None:
    assert transform_position(5, Delta()) == 5
    assert transform_position(5, Delta().retain(10, {"bold": True})) == 5


def test_selection_moves_and_never_grows_over_an_insert_at_its_end() -> None:
    assert transform_selection(2, 3, Delta().insert("AB")) == (4, 3)
    assert transform_selection(2, 3, Delta().retain(5).insert("X")) == (2, 3)
    assert transform_selection(2, 3, Delta().retain(3).delete(5)) == (2, 1)
    assert transform_selection(2, 0, Delta().retain(2).insert("X"), "right") == (3, 0)
    assert transform_selection(2, 2, Delta().delete(10)) == (0, 0)

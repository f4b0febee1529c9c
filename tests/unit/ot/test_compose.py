"""compose: the pairwise cases of quill-delta's suite, formatting, and code points."""

from __future__ import annotations

from tandem.ot import Delta, Document, apply, compose


def test_insert_then_insert() -> None:
    assert compose(Delta().insert("A"), Delta().insert("B")) == Delta().insert("BA")


def test_insert_then_retain_with_formatting() -> None:
    a = Delta().insert("A")
    b = Delta().retain(1, {"bold": True, "color": "red", "font": None})
    assert compose(a, b) == Delta().insert("A", {"bold": True, "color": "red"})


def test_insert_then_delete_cancels_out() -> None:
    assert compose(Delta().insert("A"), Delta().delete(1)) == Delta()


def test_delete_then_insert() -> None:
    assert compose(Delta().delete(1), Delta().insert("B")) == Delta().insert("B").delete(1)


def test_delete_then_retain_and_delete_then_delete() -> None:
    assert compose(Delta().delete(1), Delta().retain(1, {"bold": True})) == Delta().delete(
        1
    ).retain(1, {"bold": True})
    assert compose(Delta().delete(1), Delta().delete(1)) == Delta().delete(2)


def test_retain_then_insert() -> None:
    a = Delta().retain(1, {"color": "blue"})
    assert compose(a, Delta().insert("B")) == Delta().insert("B").retain(1, {"color": "blue"})


def test_retain_then_retain_keeps_removals() -> None:
    a = Delta().retain(1, {"color": "blue"})
    b = Delta().retain(1, {"bold": True, "color": "red", "font": None})
    assert compose(a, b) == Delta().retain(1, {"bold": True, "color": "red", "font": None})


def test_retain_then_delete() -> None:
    assert compose(Delta().retain(1, {"color": "blue"}), Delta().delete(1)) == Delta().delete(1)


def test_insert_in_the_middle_of_text() -> None:
    a = Delta().insert("Hello")
    b = Delta().retain(3).insert("X")
    assert compose(a, b) == Delta().insert("HelXlo")


def test_insert_and_delete_ordering() -> None:
    a = Delta().insert("Hello")
    insert_first = Delta().retain(3).insert("X").delete(1)
    delete_first = Delta().retain(3).delete(1).insert("X")
    assert compose(a, insert_first) == compose(a, delete_first) == Delta().insert("HelXo")


def test_removing_the_only_attribute_of_an_insert() -> None:
    a = Delta().insert("A", {"bold": True})
    assert compose(a, Delta().retain(1, {"bold": None})) == Delta().insert("A")


def test_retain_beyond_the_first_delta_is_kept() -> None:
    assert compose(Delta().insert("A"), Delta().retain(2, {"bold": True})) == Delta().insert(
        "A", {"bold": True}
    ).retain(1, {"bold": True})


def test_retain_start_optimisation() -> None:
    a = Delta().insert("A", {"bold": True}).insert("B").insert("C", {"bold": True}).delete(1)
    b = Delta().retain(3).insert("D")
    expected = Delta().insert("A", {"bold": True}).insert("B").insert("C", {"bold": True})
    assert compose(a, b) == expected.insert("D").delete(1)


def test_retain_end_optimisation_keeps_the_rest_of_a() -> None:
    a = Delta().insert("A", {"bold": True}).insert("B").insert("C", {"bold": True})
    b = Delta().delete(1)
    assert compose(a, b) == Delta().insert("B").insert("C", {"bold": True})


def test_emoji_count_as_one_position() -> None:
    a = Delta().insert("a😀b")
    b = Delta().retain(1).delete(1).insert("🎉")
    assert compose(a, b) == Delta().insert("a🎉b")


def test_composing_with_nothing() -> None:
    a = Delta().retain(2).insert("x")
    assert compose(a, Delta()) == a
    assert compose(Delta(), a) == a
    assert compose(Delta(), Delta()) == Delta()


def test_inputs_are_not_modified() -> None:
    a = Delta().insert("A")
    b = Delta().retain(1).insert("B")
    compose(a, b)
    assert a == Delta().insert("A") and b == Delta().retain(1).insert("B")


def test_compose_then_apply_equals_apply_twice() -> None:
    document = Document(Delta().insert("héllo 😀", {"bold": True}))
    a = Delta().retain(2).delete(2).insert("X", {"italic": True})
    b = Delta().retain(1).retain(3, {"bold": None}).insert("😀")
    assert apply(apply(document, a), b) == apply(document, compose(a, b))

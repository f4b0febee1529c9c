"""transform: the pairwise cases, sides, formatting priority, and the keystroke fast path."""

from __future__ import annotations

import random

import pytest

from tandem.ot import Delta, Document, Side, apply, transform
from tandem.ot.iterator import ComponentIterator


def test_insert_against_insert_respects_the_side() -> None:
    a = Delta().insert("A")
    b = Delta().insert("B")
    assert transform(b, a, "left") == Delta().insert("B")
    assert transform(b, a, "right") == Delta().retain(1).insert("B")


def test_insert_against_retain_and_delete() -> None:
    assert transform(
        Delta().retain(1, {"bold": True}), Delta().insert("A"), "left"
    ) == Delta().retain(1).retain(1, {"bold": True})
    assert transform(Delta().delete(1), Delta().insert("A"), "right") == Delta().retain(1).delete(1)


def test_delete_against_insert_retain_delete() -> None:
    assert transform(Delta().insert("B"), Delta().delete(1), "right") == Delta().insert("B")
    assert transform(Delta().retain(1, {"b": 1}), Delta().delete(1), "right") == Delta()
    assert transform(Delta().delete(1), Delta().delete(1), "right") == Delta()


def test_retain_against_retain_formatting_priority() -> None:
    mine = Delta().retain(1, {"color": "blue"})
    theirs = Delta().retain(1, {"bold": True, "color": "red"})
    # side "right": what was committed first (theirs) wins the conflicting key
    assert transform(mine, theirs, "right") == Delta()
    assert transform(theirs, mine, "right") == Delta().retain(1, {"bold": True})
    # side "left": our value overwrites
    assert transform(mine, theirs, "left") == mine


def test_alternating_edits() -> None:
    # b's builder moves "ow" in front of the delete: b is retain 1, insert "eow", delete 5.
    # Expected values as quill-delta 5.1 computes them.
    a = Delta().retain(2).insert("si").delete(5)
    b = Delta().retain(1).insert("e").delete(5).insert("ow")
    assert transform(b, a, "left") == Delta().retain(1).insert("eow").delete(1)
    assert transform(a, b, "left") == Delta().retain(4).insert("si").delete(1)


def test_conflicting_appends() -> None:
    a = Delta().retain(3).insert("aa")
    b = Delta().retain(3).insert("bb")
    assert transform(b, a, "right") == Delta().retain(5).insert("bb")
    assert transform(a, b, "left") == Delta().retain(3).insert("aa")


def test_prepend_and_append() -> None:
    a = Delta().insert("aa")
    b = Delta().retain(3).insert("bb")
    assert transform(b, a, "left") == Delta().retain(5).insert("bb")
    assert transform(a, b, "left") == Delta().insert("aa")


def test_trailing_deletes_with_differing_lengths() -> None:
    a = Delta().retain(2).delete(1)
    b = Delta().delete(3)
    assert transform(b, a, "left") == Delta().delete(2)
    assert transform(a, b, "left") == Delta()


def test_emoji_positions() -> None:
    document = Document("a😀b")
    theirs = Delta().retain(1).insert("🎉")  # after "a"
    mine = Delta().retain(2).insert("x")  # after "😀"
    assert transform(mine, theirs, "right") == Delta().retain(3).insert("x")
    assert apply(apply(document, theirs), transform(mine, theirs, "right")).text() == "a🎉😀xb"


def test_bad_side_raises() -> None:
    with pytest.raises(ValueError, match="side must be"):
        transform(Delta(), Delta(), "middle")  # type: ignore[arg-type]


def test_inputs_are_not_modified() -> None:
    a = Delta().retain(1).insert("a")
    b = Delta().retain(1).delete(1)
    transform(a, b, "left")
    assert a == Delta().retain(1).insert("a") and b == Delta().retain(1).delete(1)


def _general(op: Delta, against: Delta, side: Side) -> Delta:
    """The general loop with the fast path out of the way (a third, unmergeable component)."""
    # Append a formatted retain past both ops: the general path handles it and it
    # only adds a trailing formatted retain to the result, which we strip again.
    marker = {"_probe": True}
    tail = max(op.base_length(), against.base_length()) + 5
    padded = Delta(op.ops).retain(tail - op.base_length()).retain(1, marker)
    result = transform(padded, against, side)
    iterator = ComponentIterator(result.ops)
    kept = Delta()
    while iterator.has_next():
        component = iterator.next()
        if getattr(component, "attributes", None) != marker:
            kept.push(component)
    return kept.chop()


def _keystroke(rng: random.Random, length: int) -> Delta:
    position = rng.randint(0, length)
    if position < length and rng.random() < 0.5:
        return Delta().retain(position).delete(rng.randint(1, length - position))
    return Delta().retain(position).insert(rng.choice(["x", "yz", "😀"]))


@pytest.mark.parametrize("side", ["left", "right"])
def test_keystroke_fast_path_matches_the_general_loop(side: Side) -> None:
    seed = 4
    rng = random.Random(seed)
    for _ in range(3000):
        length = rng.randint(0, 6)
        op, against = _keystroke(rng, length), _keystroke(rng, length)
        expected = _general(op, against, side)
        assert transform(op, against, side) == expected, f"seed {seed}: {op} against {against}"

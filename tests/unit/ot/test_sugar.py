"""The simple edit messages as deltas, and plain text of a document delta."""

from __future__ import annotations

from typing import Any

import pytest

from tandem.errors import InvalidOperation
from tandem.ot import Delta, apply, from_simple, to_text


def test_insert() -> None:
    assert from_simple({"type": "insert", "pos": 2, "text": "Hi"}) == Delta().retain(2).insert("Hi")
    op = from_simple({"type": "insert", "pos": 0, "text": "😀", "attributes": {"bold": True}})
    assert op == Delta().insert("😀", {"bold": True})


def test_delete_and_format() -> None:
    assert from_simple({"type": "delete", "pos": 1, "length": 2}) == Delta().retain(1).delete(2)
    op = from_simple({"type": "format", "pos": 1, "length": 2, "attributes": {"bold": None}})
    assert op == Delta().retain(1).retain(2, {"bold": None})


def test_positions_count_code_points() -> None:
    document = "a😀b"
    assert apply(document, from_simple({"type": "insert", "pos": 2, "text": "!"})).text() == (
        "a😀!b"
    )
    assert apply(document, from_simple({"type": "delete", "pos": 1, "length": 1})).text() == "ab"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"type": "move", "pos": 1}, "unknown simple edit type 'move'"),
        ({"pos": 1}, "unknown simple edit type 'None'"),
        ({"type": ["insert"], "pos": 1}, "unknown simple edit type"),
        ({"type": "insert", "text": "a"}, "'pos' must be a non-negative integer"),
        ({"type": "insert", "pos": -1, "text": "a"}, "'pos' must be a non-negative integer"),
        ({"type": "insert", "pos": True, "text": "a"}, "'pos' must be a non-negative integer"),
        ({"type": "insert", "pos": 1.0, "text": "a"}, "'pos' must be a non-negative integer"),
        ({"type": "insert", "pos": 2**40, "text": "a"}, "'pos' must be a non-negative integer"),
        ({"type": "insert", "pos": 0, "text": ""}, "'text' must be a non-empty string"),
        ({"type": "insert", "pos": 0, "text": 5}, "'text' must be a non-empty string"),
        ({"type": "insert", "pos": 0, "text": "\ud800"}, "lone UTF-16 surrogate"),
        (
            {"type": "insert", "pos": 0, "text": "a", "attributes": {"bold": None}},
            "only allowed on retain",
        ),
        ({"type": "delete", "pos": 0}, "'length' must be a positive integer"),
        ({"type": "delete", "pos": 0, "length": 0}, "'length' must be a positive integer"),
        ({"type": "format", "pos": 0, "length": 1}, "'attributes' must be a non-empty object"),
        (
            {"type": "format", "pos": 0, "length": 1, "attributes": {}},
            "'attributes' must be a non-empty object",
        ),
        (
            {"type": "format", "pos": 0, "length": 1, "attributes": {"b": [1]}},
            "must be a string, number, boolean or null",
        ),
    ],
)
def test_invalid_messages(message: dict[str, Any], error: str) -> None:
    with pytest.raises(InvalidOperation, match=error):
        from_simple(message)


def test_to_text() -> None:
    assert to_text(Delta().insert("a😀", {"b": 1}).insert("c")) == "a😀c"
    assert to_text(Delta()) == ""
    with pytest.raises(InvalidOperation, match="only a document"):
        to_text(Delta().retain(1))

"""diff: text edits, formatting changes, code points, and the difflib budget."""

from __future__ import annotations

import pytest

from tandem.ot import Delta, Document, apply, diff
from tandem.ot import diff as diff_function


def test_equal_documents() -> None:
    assert diff("abc", "abc") == Delta()
    assert diff("", "") == Delta()


def test_insert_delete_replace() -> None:
    assert diff("ac", "abc") == Delta().retain(1).insert("b")
    assert diff("abc", "ac") == Delta().retain(1).delete(1)
    assert diff("", "x😀") == Delta().insert("x😀")
    assert diff("x😀", "") == Delta().delete(2)


def test_emoji_are_whole_positions() -> None:
    assert diff("a😀b", "a🎉b") == Delta().retain(1).insert("🎉").delete(1)


def test_formatting_changes_become_retains() -> None:
    a = Delta().insert("ab", {"bold": True}).insert("c")
    b = Delta().insert("a", {"bold": True}).insert("bc", {"color": "red"})
    expected = (
        Delta().retain(1).retain(1, {"bold": None, "color": "red"}).retain(1, {"color": "red"})
    )
    assert diff(a, b) == expected
    assert apply(a, diff(a, b)) == Document(b)


def test_documents_and_deltas_are_accepted() -> None:
    a = Document("hello world")
    b = Delta().insert("hello brave world")
    assert apply(a, diff(a, b)) == b


def test_large_middle_is_replaced_wholesale(monkeypatch: pytest.MonkeyPatch) -> None:
    module = __import__("sys").modules[diff_function.__module__]
    monkeypatch.setattr(module, "DIFFLIB_BUDGET", 10)
    a, b = "start " + "abcdef" * 5 + " end", "start " + "fedcba" * 5 + " end"
    delta = diff(a, b)
    assert delta == Delta().retain(6).insert("fedcba" * 5).delete(30)
    assert apply(a, delta).text() == b

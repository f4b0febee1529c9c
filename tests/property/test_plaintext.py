"""``PlainText`` is a ``str`` in chunks: every answer equals the ``str``'s.

Chunks of 3 code points (``Tiny``) make every op cross chunk boundaries:
deletes that empty chunks, inserts that overflow them, retains that start or
end inside them. Checked after each op of a random history: the text, its
length, the UTF-8 size of each retain and delete (``measure``), and UTF-8
offsets and lengths at random places, against ``str`` and ``str.encode``.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tandem.merge.plaintext import PlainText
from tandem.merge.translate import apply_to_text
from tandem.ot import Delta, Document, Insert

from .strategies import document_and_sequential_ops


class Tiny(PlainText):
    chunk = 3


def _bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _measured(text: str, op: Delta) -> list[int]:
    """The UTF-8 bytes of each retain and delete of ``op`` over ``text``."""
    sizes, at = [], 0
    for component in op.ops:
        if not isinstance(component, Insert):
            sizes.append(_bytes(text[at : at + component.count]))
            at += component.count
    return sizes


@given(document_and_sequential_ops(6), st.data())
def test_every_answer_equals_the_strs(
    case: tuple[Document, list[Delta]], data: st.DataObject
) -> None:
    document, history = case
    for kind in (Tiny, PlainText):
        text = document.text()
        plain = kind(text)
        for op in history:
            after, measured = plain.measure(op)
            assert measured == _measured(text, op)
            text, plain = apply_to_text(text, op), plain.apply(op)
            assert after == plain
            assert str(plain) == text and len(plain) == len(text) and plain == text
            assert all(0 < len(chunk) <= kind.chunk for chunk in plain._chunks)
            for _ in range(3):
                a = data.draw(st.integers(-1, len(text) + 1))
                b = data.draw(st.integers(-1, len(text) + 1))
                assert plain.utf8_offset(a) == _bytes(text[: max(a, 0)])
                assert plain.utf8_length(a, b) == _bytes(text[max(a, 0) : max(b, 0)])


@given(st.text(max_size=40), st.integers(0, 45))
def test_a_delta_past_the_end_is_refused_and_changes_nothing(text: str, reach: int) -> None:
    plain = Tiny(text)
    op = Delta().retain(reach).delete(1) if reach else Delta().delete(len(text) + 1)
    if reach + 1 <= len(text):
        return  # within the text: not this test's case
    with pytest.raises(ValueError):
        plain.apply(op)
    assert str(plain) == text


def test_untouched_chunks_are_shared_not_copied() -> None:
    plain = Tiny("abcdefghijkl")  # four chunks
    after = plain.apply(Delta().retain(7).insert("X"))
    assert str(after) == "abcdefgXhijkl"
    assert after._chunks[0] is plain._chunks[0] and after._chunks[1] is plain._chunks[1]


def test_many_deletes_do_not_leave_it_in_crumbs() -> None:
    plain = Tiny("x" * 300)
    for i in range(99):
        plain = plain.apply(Delta().retain(i + 1).delete(2))
    assert len(plain) == 102 and str(plain) == "x" * 102
    assert len(plain._chunks) <= 2 * (102 // 3) + 8

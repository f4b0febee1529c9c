"""Compute a delta that turns one document into another.

``apply(a, diff(a, b)) == b`` always holds (property-tested). The text diff
trims the common prefix and suffix, then runs ``difflib`` on the middle when
it is small enough to stay fast, and otherwise replaces the middle wholesale:
minimal-ish, never slow. Formatting differences inside kept text become
retains with attributes. Pure: no I/O.
"""

from __future__ import annotations

import difflib
from typing import Final

from tandem.ot.attributes import diff_attributes
from tandem.ot.delta import Attributes, Delta
from tandem.ot.document import Document

__all__ = ["diff"]

#: Above this many character pairs in the changed middle, skip difflib.
DIFFLIB_BUDGET: Final = 4_000_000


def diff(a: Document | Delta | str, b: Document | Delta | str) -> Delta:
    """A delta taking document ``a`` to document ``b``."""
    a_doc = a if isinstance(a, Document) else Document(a)
    b_doc = b if isinstance(b, Document) else Document(b)
    a_text, b_text = a_doc.text(), b_doc.text()
    result = Delta()
    a_pos = b_pos = 0
    for tag, length_a, length_b in _text_edits(a_text, b_text):
        if tag == "equal":
            a_runs = a_doc.slice(a_pos, a_pos + length_a)
            b_runs = b_doc.slice(b_pos, b_pos + length_b)
            _retain_formatting(result, a_runs, b_runs)
        else:
            if length_a:
                result.delete(length_a)
            for text, attributes in b_doc.slice(b_pos, b_pos + length_b):
                result.insert(text, attributes)
        a_pos += length_a
        b_pos += length_b
    return result.chop()


def _text_edits(a: str, b: str) -> list[tuple[str, int, int]]:
    """Edits as ``(tag, length in a, length in b)``; tag is ``equal`` or ``replace``."""
    limit = min(len(a), len(b))
    prefix = 0
    while prefix < limit and a[prefix] == b[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and a[len(a) - 1 - suffix] == b[len(b) - 1 - suffix]:
        suffix += 1
    edits: list[tuple[str, int, int]] = []
    if prefix:
        edits.append(("equal", prefix, prefix))
    mid_a = a[prefix : len(a) - suffix]
    mid_b = b[prefix : len(b) - suffix]
    if mid_a or mid_b:
        if mid_a and mid_b and len(mid_a) * len(mid_b) <= DIFFLIB_BUDGET:
            matcher = difflib.SequenceMatcher(None, mid_a, mid_b, autojunk=False)
            for tag, i1, i2, j1, j2 in matcher.get_opcodes():
                edits.append(("equal" if tag == "equal" else "replace", i2 - i1, j2 - j1))
        else:
            edits.append(("replace", len(mid_a), len(mid_b)))
    if suffix:
        edits.append(("equal", suffix, suffix))
    return edits


def _retain_formatting(
    result: Delta,
    a_runs: list[tuple[str, Attributes | None]],
    b_runs: list[tuple[str, Attributes | None]],
) -> None:
    """Retain equal text, with the attribute changes between the two formattings."""
    ai = bi = 0
    a_off = b_off = 0
    while ai < len(a_runs) and bi < len(b_runs):
        a_text, a_attrs = a_runs[ai]
        b_text, b_attrs = b_runs[bi]
        take = min(len(a_text) - a_off, len(b_text) - b_off)
        result.retain(take, diff_attributes(a_attrs, b_attrs))
        a_off += take
        b_off += take
        if a_off == len(a_text):
            ai, a_off = ai + 1, 0
        if b_off == len(b_text):
            bi, b_off = bi + 1, 0

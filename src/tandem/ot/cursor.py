"""Move a cursor position or selection through a delta.

``transform_position(index, op, side)`` agrees with ``transform``: it is where
a one-character insert at ``index`` would land after ``op``, with the same
``side`` meaning — ``"left"`` keeps the cursor before an insert made exactly
at it, ``"right"`` moves it after. A position inside a deleted range moves to
the start of the deletion. For a remote edit use ``"left"`` (the caret stays
put); for the cursor's owner's own insert use ``"right"`` (it is pushed along),
as quill-delta's ``transformPosition(index, !isOwnOp)`` does. Pure: no I/O.
"""

from __future__ import annotations

from tandem.ot.delta import Delete, Delta, Insert
from tandem.ot.transform import Side

__all__ = ["transform_position", "transform_selection"]


def transform_position(index: int, op: Delta, side: Side = "left") -> int:
    """Where ``index`` ends up after ``op``."""
    stay_left = side == "left"
    offset = 0
    for component in op.ops:
        if offset > index:
            break
        length = len(component)
        kind = type(component)
        if kind is Delete:
            index -= min(length, index - offset)
            continue
        if kind is Insert and (offset < index or not stay_left):
            index += length
        offset += length
    return index


def transform_selection(index: int, length: int, op: Delta, side: Side = "left") -> tuple[int, int]:
    """Move a selection ``[index, index + length)``; it never grows over an insert at its end."""
    start = transform_position(index, op, side)
    if length == 0:
        return start, 0
    end = transform_position(index + length, op, "left")
    return start, max(0, end - start)

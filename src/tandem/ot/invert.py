"""Invert a delta against the document it was applied to.

Invariant (property-tested): ``apply(apply(d, op), invert(op, d)) == d``.
Semantics follow quill-delta's ``Delta.invert``. Pure: no I/O.
"""

from __future__ import annotations

from tandem.errors import OperationTooLong
from tandem.ot.attributes import invert_attributes
from tandem.ot.delta import Delete, Delta, Insert, Retain
from tandem.ot.document import Document

__all__ = ["invert"]


def invert(op: Delta, base: Document | Delta | str) -> Delta:
    """The delta that undoes ``op``, given the document ``base`` it was applied to."""
    if not isinstance(base, Document):
        base = Document(base)
    if op.base_length() > len(base):
        raise OperationTooLong(
            f"op reaches position {op.base_length()} but the document has {len(base)} characters"
        )
    inverted = Delta()
    base_index = 0
    for component in op.ops:
        kind = type(component)
        if kind is Insert:
            inverted.delete(len(component))
            continue
        length = len(component)
        if kind is Retain and not component.attributes:  # type: ignore[union-attr]
            inverted.retain(length)
        elif kind is Delete:
            for text, attributes in base.slice(base_index, base_index + length):
                inverted.insert(text, attributes)
        else:
            for text, attributes in base.slice(base_index, base_index + length):
                inverted.retain(
                    len(text),
                    invert_attributes(component.attributes, attributes),  # type: ignore[union-attr]
                )
        base_index += length
    return inverted.chop()

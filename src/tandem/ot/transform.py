"""Transform a delta against a concurrent one.

``transform(op, against, side)`` returns ``op'``, the edit ``op`` rewritten to
apply *after* ``against``, where both were made on the same document. ``side``
breaks the tie when both insert at the same position: ``"left"`` puts ``op``'s
insert before ``against``'s, ``"right"`` after it.

TP1 (checked by the property tests), for every document ``d``::

    apply(apply(d, a), transform(b, a, "left")) == apply(apply(d, b), transform(a, b, "right"))

                d
           a  /   \\  b
             /     \\
           d·a     d·b
   b'=T(b,a,left) \\ / a'=T(a,b,right)
                 d'

The server always passes ``"right"`` for the incoming op (what was committed
first stays first) and clients pass ``"left"`` for an incoming server op
against their pending one, so both walk the same diamond.

Transform does *not* commute with compose for this type
(``transform(a, compose(b1, b2)) != transform(transform(a, b1), b2)`` in
general), so callers transform against committed ops one at a time. Semantics
follow quill-delta's ``Delta.transform``: ``transform(op, against, side)`` is
``against.transform(op, priority=(side == "right"))``. Pure: no I/O.
"""

from __future__ import annotations

from typing import Literal

from tandem.ot.attributes import transform_attributes
from tandem.ot.delta import Delete, Delta, Insert, Retain
from tandem.ot.iterator import ComponentIterator

__all__ = ["Side", "transform"]

Side = Literal["left", "right"]


def transform(op: Delta, against: Delta, side: Side) -> Delta:
    """Rewrite ``op`` to apply after the concurrent ``against`` (see module docstring)."""
    if side == "right":
        priority = True
    elif side == "left":
        priority = False
    else:
        raise ValueError(f"side must be 'left' or 'right', not {side!r}")
    this = ComponentIterator(against.ops)
    other = ComponentIterator(op.ops)
    result = Delta()
    push = result.push
    while this.has_next() or other.has_next():
        this_type = this.peek_type()
        if this_type is Insert and (priority or other.peek_type() is not Insert):
            push(Retain(len(this.next())))
        elif other.peek_type() is Insert:
            push(other.next())
        else:
            length = min(this.peek_length(), other.peek_length())
            this_op = this.next(length)
            other_op = other.next(length)
            if type(this_op) is Delete:
                # Our delete already removed what they delete or retain.
                continue
            if type(other_op) is Delete:
                push(other_op)
            else:
                push(
                    Retain(
                        length,
                        transform_attributes(
                            this_op.attributes,  # type: ignore[union-attr]
                            other_op.attributes,  # type: ignore[union-attr]
                            priority,
                        ),
                    )
                )
    return result.chop()

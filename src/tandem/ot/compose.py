"""Compose two deltas into one.

Invariant (checked by the property tests): for every document ``d`` that ``a``
applies to, ``apply(apply(d, a), b) == apply(d, compose(a, b))``. Composition
is associative. Semantics follow quill-delta 5.1 exactly, including its
shortcut for a leading plain retain and for a plain-retain tail, so the
differential tests compare component by component. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tandem.ot.attributes import compose_attributes
from tandem.ot.delta import Delete, Delta, Insert, Retain
from tandem.ot.iterator import ComponentIterator

__all__ = ["compose", "compose_pairwise"]


def compose(a: Delta, b: Delta) -> Delta:
    """The single delta equivalent to applying ``a`` and then ``b``."""
    this = ComponentIterator(a.ops)
    other = ComponentIterator(b.ops)
    result = Delta()
    push = result.push

    # A leading plain retain in b skips a's leading inserts untouched.
    first = other.peek()
    if type(first) is Retain and not first.attributes:
        first_left = first.count
        while this.peek_type() is Insert and this.peek_length() <= first_left:
            first_left -= this.peek_length()
            push(this.next())
        if first.count - first_left > 0:
            other.next(first.count - first_left)

    while this.has_next() or other.has_next():
        other_type = other.peek_type()
        if other_type is Insert:
            push(other.next())
            continue
        if this.peek_type() is Delete:
            push(this.next())
            continue
        length = min(this.peek_length(), other.peek_length())
        this_op = this.next(length)
        other_op = other.next(length)
        if type(other_op) is Retain:
            this_is_retain = type(this_op) is Retain
            attributes = compose_attributes(
                this_op.attributes,  # type: ignore[union-attr]
                other_op.attributes,
                this_is_retain,
            )
            if this_is_retain:
                new_op: Insert | Retain = Retain(length, attributes)
            else:
                new_op = Insert(this_op.text, attributes)  # type: ignore[union-attr]
            push(new_op)
            # The rest of b is a plain retain: the rest of a passes through unchanged.
            if not other.has_next() and result.ops and result.ops[-1] == new_op:
                return result.concat(Delta(this.rest())).chop()
        elif type(this_op) is Retain:
            # b deletes what a retained; a delete over a's insert cancels it out.
            push(other_op)
    return result.chop()


def compose_pairwise(
    ops: Sequence[Delta], combine: Callable[[Delta, Delta], Delta] = compose
) -> Delta:
    """``ops`` composed into one in order, pairwise (a balanced tree); ``Delta()`` for none.

    Composing left to right re-walks the growing result for every op (ops
    scattered over a document make it grow by one or two components each):
    O(m²) components for m ops. Pairwise, each component is walked about
    log2(m) times. ``combine`` is ``compose`` or an equal, faster one for a
    special case (``merge.branch``'s for sparse edits); associativity makes the
    order of the pairing irrelevant.
    """
    level = list(ops)
    if not level:
        return Delta()
    while len(level) > 1:
        paired = [combine(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]

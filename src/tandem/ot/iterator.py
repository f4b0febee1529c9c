"""A cursor over a delta's components that can take partial components.

Internal to ``tandem.ot``; mirrors quill-delta's ``OpIterator`` so compose and
transform read the same way as the reference. When exhausted it behaves as an
endless plain retain, which is what lets compose and transform treat the
shorter delta as "retain the rest".
"""

from __future__ import annotations

import sys
from typing import Final

from tandem.ot.delta import Component, Delete, Insert, Retain

__all__ = ["INFINITY", "ComponentIterator"]

INFINITY: Final = sys.maxsize


class ComponentIterator:
    __slots__ = ("ops", "index", "offset", "size")

    def __init__(self, ops: list[Component]) -> None:
        self.ops = ops
        self.index = 0
        self.offset = 0
        self.size = len(ops)

    def has_next(self) -> bool:
        return self.index < self.size

    def peek(self) -> Component | None:
        return self.ops[self.index] if self.index < self.size else None

    def peek_length(self) -> int:
        if self.index < self.size:
            return len(self.ops[self.index]) - self.offset
        return INFINITY

    def peek_type(self) -> type[Component]:
        if self.index < self.size:
            return type(self.ops[self.index])
        return Retain

    def next(self, length: int = INFINITY) -> Component:
        if self.index >= self.size:
            return Retain(INFINITY)
        component = self.ops[self.index]
        offset = self.offset
        remaining = len(component) - offset
        if length >= remaining:
            length = remaining
            self.index += 1
            self.offset = 0
            if offset == 0:
                return component
        else:
            self.offset = offset + length
        kind = type(component)
        if kind is Insert:
            return Insert(component.text[offset : offset + length], component.attributes)  # type: ignore[union-attr]
        if kind is Retain:
            return Retain(length, component.attributes)  # type: ignore[union-attr]
        return Delete(length)

    def rest(self) -> list[Component]:
        """Everything not yet consumed, as components (a partial one first)."""
        if self.index >= self.size:
            return []
        if self.offset == 0:
            return self.ops[self.index :]
        offset, index = self.offset, self.index
        first = self.next()
        rest = [first, *self.ops[self.index :]]
        self.offset, self.index = offset, index
        return rest

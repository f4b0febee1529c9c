"""The product sheet's simple edit messages, as deltas, and deltas as plain text.

``{"type": "insert", "pos": 10, "text": "Hello", "attributes"?: {...}}``,
``{"type": "delete", "pos": p, "length": n}`` and
``{"type": "format", "pos": p, "length": n, "attributes": {...}}`` are sugar
for ordinary deltas. Positions count code points. Whether ``pos`` is inside
the document is checked when the delta is applied. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from tandem.errors import InvalidOperation
from tandem.ot.delta import MAX_COUNT, Delta, has_lone_surrogate, validate_attributes

__all__ = ["SUGAR_TYPES", "from_simple", "to_text"]

SUGAR_TYPES = frozenset({"insert", "delete", "format"})


def _non_negative(message: Mapping[str, object], key: str, *, positive: bool = False) -> int:
    value = message.get(key)
    if type(value) is not int or value < (1 if positive else 0) or value > MAX_COUNT:
        need = "a positive" if positive else "a non-negative"
        raise InvalidOperation(f"{message['type']}: {key!r} must be {need} integer")
    return value


def from_simple(message: Mapping[str, object]) -> Delta:
    """Turn one simple message into the equivalent delta."""
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in SUGAR_TYPES:
        raise InvalidOperation(f"unknown simple edit type {str(kind)[:40]!r}")
    pos = _non_negative(message, "pos")
    if kind == "insert":
        text = message.get("text")
        if not isinstance(text, str) or not text:
            raise InvalidOperation("insert: 'text' must be a non-empty string")
        if has_lone_surrogate(text):
            raise InvalidOperation("insert: 'text' contains a lone UTF-16 surrogate")
        attributes = validate_attributes(message.get("attributes"), "insert", allow_null=False)
        return Delta().retain(pos).insert(text, attributes)
    if kind == "delete":
        return Delta().retain(pos).delete(_non_negative(message, "length", positive=True))
    # kind == "format"
    length = _non_negative(message, "length", positive=True)
    attributes = validate_attributes(message.get("attributes"), "format", allow_null=True)
    if not attributes:
        raise InvalidOperation("format: 'attributes' must be a non-empty object")
    return Delta().retain(pos).retain(length, attributes)


def to_text(delta: Delta) -> str:
    """The plain text of a document delta (inserts only; formatting dropped)."""
    if not delta.is_document():
        raise InvalidOperation("only a document (a delta of inserts) has plain text")
    return delta.text()

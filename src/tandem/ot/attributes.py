"""Attribute-map algebra: compose, transform, invert and diff of formatting maps.

Semantics follow quill-delta's ``AttributeMap`` exactly (the differential tests
check it): a ``None`` value means "remove this attribute". Maps are never
mutated; each function returns a new map or ``None`` for "no attributes".
Pure: no I/O.
"""

from __future__ import annotations

from tandem.ot.delta import Attributes, AttributeValue, same_value

__all__ = ["compose_attributes", "diff_attributes", "invert_attributes", "transform_attributes"]


def compose_attributes(
    a: Attributes | None, b: Attributes | None, keep_null: bool
) -> Attributes | None:
    """``b`` applied over ``a``; ``keep_null`` keeps removals (for retains over retains)."""
    if not b:
        return dict(a) if a else None
    result: dict[str, AttributeValue] = (
        dict(b) if keep_null else {k: v for k, v in b.items() if v is not None}
    )
    if a:
        for key, value in a.items():
            if key not in b:
                result[key] = value
    return result or None


def transform_attributes(
    a: Attributes | None, b: Attributes | None, priority: bool
) -> Attributes | None:
    """``b``'s formatting after ``a``'s concurrent formatting; with ``priority`` ``a`` wins."""
    if not a:
        return b
    if not b:
        return None
    if not priority:
        return b
    result = {key: value for key, value in b.items() if key not in a}
    return result or None


def invert_attributes(attributes: Attributes | None, base: Attributes | None) -> Attributes | None:
    """The formatting that undoes ``attributes`` applied over ``base``."""
    attributes = attributes or {}
    base = base or {}
    result: dict[str, object] = {}
    for key, value in base.items():
        if key in attributes and not same_value(attributes[key], value):
            result[key] = value
    for key in attributes:
        if key not in base:
            result[key] = None
    return result or None  # type: ignore[return-value]


def diff_attributes(a: Attributes | None, b: Attributes | None) -> Attributes | None:
    """The retain attributes that turn formatting ``a`` into ``b``."""
    a = a or {}
    b = b or {}
    result: dict[str, object] = {}
    for key in a.keys() | b.keys():
        if key not in a or key not in b or not same_value(a[key], b[key]):
            result[key] = b.get(key)
    return result or None  # type: ignore[return-value]

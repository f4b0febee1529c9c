"""Yjs text changes ⇄ Tandem deltas, converting UTF-8 byte offsets ⇄ code points.

pycrdt 0.14 (Yrs) indexes ``Text`` by **UTF-8 bytes**: ``insert``, ``format``,
``del t[a:b]`` and the ``delta`` of a ``TextEvent`` all count bytes, while a
Tandem delta counts code points. An index that falls inside a character makes
Yrs append at the end, delete the wrong text, or panic (a ``BaseException``).
So every offset crosses this module, which always lands on character
boundaries: it walks the text *before* the change alongside the delta.

Formatting: Yrs inserts text **inheriting** the formatting at the insert
position when given no attributes, whereas a Tandem insert without attributes
is plain; so we always pass an explicit (possibly empty) attribute map. Yrs
turns every number into a float; integral floats come back as ints.

Owns: ``apply_delta`` (our delta onto a pycrdt ``Text``), ``delta_from_event``
(a Yjs delta in bytes → our delta in code points); ``utf8_length`` and
``apply_to_text`` live beside ``PlainText`` and are re-exported here.
Pure: must not import asyncio, storage, bus or network code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pycrdt import Text, Transaction

from tandem.merge.plaintext import PlainText, apply_to_text, utf8_length
from tandem.ot.delta import Attributes, AttributeValue, Delete, Delta, Insert, Retain

__all__ = [
    "apply_delta",
    "apply_to_text",
    "delta_from_event",
    "normalize_attributes",
    "utf8_length",
]


def normalize_value(value: Any) -> AttributeValue:
    """A Yjs attribute value as Tandem keeps it (integral floats → int)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"unsupported attribute value {value!r} (only JSON scalars)")


def normalize_attributes(attributes: Mapping[str, Any] | None) -> dict[str, AttributeValue] | None:
    """Yjs attributes → ours (``None`` when empty)."""
    if not attributes:
        return None
    return {key: normalize_value(value) for key, value in attributes.items()}


def apply_delta(text: Text, txn: Transaction | None, old: PlainText, delta: Delta) -> PlainText:
    """Apply ``delta`` (code points) to the Yrs ``text`` whose content is ``old``.

    Must run inside a transaction of ``text``'s document (``txn`` is only
    documentation of that: pycrdt picks the current transaction itself).
    Returns the new plain text; a delta reaching past the end of ``old`` is a
    ``ValueError`` before Yrs is touched. Components are applied left to
    right; the byte cursor ``at`` is in the *new* text.
    """
    del txn
    new, sizes = old.measure(delta)  # the UTF-8 bytes of each retain and delete
    measured = iter(sizes)
    at = 0
    for component in delta.ops:
        kind = type(component)
        if kind is Insert:
            assert isinstance(component, Insert)
            # An explicit (maybe empty) map: Yrs would otherwise inherit formatting.
            # Only the first key goes with the insert, the rest as single-key formats
            # (see the note on retain below).
            attributes = component.attributes or {}
            keys = sorted(attributes)
            text.insert(at, component.text, {keys[0]: attributes[keys[0]]} if keys else {})
            size = utf8_length(component.text)
            for key in keys[1:]:
                text.format(at, at + size, {key: attributes[key]})
            at += size
            continue
        size = next(measured)  # a Retain or a Delete
        if kind is Delete:
            del text[at : at + size]
            continue
        assert isinstance(component, Retain)
        if component.attributes:
            # One key per call, sorted: Yrs orders a map's format items by
            # hash-map iteration, which would make replays differ.
            for key in sorted(component.attributes):
                text.format(at, at + size, {key: component.attributes[key]})
        at += size
    return new


def delta_from_event(old: str, changes: Sequence[Mapping[str, Any]]) -> Delta:
    """A Yjs text delta (UTF-8 byte counts over ``old``) as a Tandem delta (code points).

    Embeds (non-string inserts) are not part of Tandem's model and raise
    ``ValueError``.
    """
    ascii_only = old.isascii()
    data = b"" if ascii_only else old.encode("utf-8")
    byte = 0  # cursor in old, bytes
    delta = Delta()
    for change in changes:
        attributes: Attributes | None = normalize_attributes(change.get("attributes"))
        if "insert" in change:
            value = change["insert"]
            if not isinstance(value, str):
                raise ValueError("embeds are not supported by Tandem documents")
            delta.insert(value, attributes)
            continue
        count = int(change["retain"] if "retain" in change else change["delete"])
        points = count if ascii_only else len(data[byte : byte + count].decode("utf-8"))
        byte += count
        if "retain" in change:
            delta.retain(points, attributes)
        else:
            delta.delete(points)
    return delta.chop()

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
(a Yjs delta in bytes → our delta in code points), ``utf8_length``.
Pure: must not import asyncio, storage, bus or network code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pycrdt import Text, Transaction

from tandem.merge.plaintext import PlainText
from tandem.ot.delta import Attributes, AttributeValue, Delete, Delta, Insert, Retain

__all__ = [
    "apply_delta",
    "apply_to_text",
    "delta_from_event",
    "normalize_attributes",
    "utf8_length",
]


def utf8_length(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (free for ASCII: ``str.isascii`` is O(1))."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


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
    Returns the new plain text. Components are applied left to right; the
    byte cursor ``at`` is in the *new* text, ``i`` (code points) in ``old``.
    A text of one chunk (the usual) is sliced as a ``str``; a longer one is
    never copied whole (``PlainText``), and a delta reaching past its end is a
    ``ValueError`` before Yrs is touched.
    """
    del txn
    whole = old.single
    new = old.apply(delta) if whole is None else None
    i = 0
    at = 0
    pieces: list[str] = []
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
            if whole is not None:
                pieces.append(component.text)
            at += size
            continue
        count = component.count  # type: ignore[union-attr]  # a Retain or a Delete
        if whole is not None:
            chunk = whole[i : i + count]
            if len(chunk) != count:
                raise ValueError("delta reaches past the end of the replica text")
            size = utf8_length(chunk)
        else:
            size = old.utf8_length(i, i + count)
        i += count
        if kind is Delete:
            del text[at : at + size]
            continue
        assert isinstance(component, Retain)
        if component.attributes:
            # One key per call, sorted: Yrs orders a map's format items by
            # hash-map iteration, which would make replays differ.
            for key in sorted(component.attributes):
                text.format(at, at + size, {key: component.attributes[key]})
        if whole is not None:
            pieces.append(chunk)
        at += size
    if new is not None:
        return new
    assert whole is not None
    pieces.append(whole[i:])
    return PlainText.of("".join(pieces))


def apply_to_text(old: str, delta: Delta) -> str:
    """The plain text of ``old`` after ``delta`` (formatting ignored)."""
    i = 0
    pieces: list[str] = []
    for component in delta.ops:
        if type(component) is Retain:
            pieces.append(old[i : i + component.count])
            i += component.count
        elif type(component) is Delete:
            i += component.count
        else:
            pieces.append(component.text)  # type: ignore[union-attr]
    pieces.append(old[i:])
    return "".join(pieces)


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

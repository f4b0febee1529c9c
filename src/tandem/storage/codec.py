"""The stored form of deltas: orjson bytes in, validated ``Delta`` out.

Every backend stores an op (and a snapshot's content) as the JSON text of
``Delta.to_json()``. This module owns that conversion and nothing else; it is
pure (no asyncio, no database drivers) so all three backends, and the
reference ``MemoryStore``, read and write byte-for-byte the same thing.

An op that could not be loaded back must fail *before* it is committed and
acknowledged, not later when the document is opened: ``Delta.from_json`` is
stricter than the builder (a null attribute on an insert, a count out of
range, an attribute value that is not a scalar). Encoding checks each
component against the very rules ``from_json`` applies (``loadable``), on the
components themselves: parsing the bytes back cost more than the rest of an
op's commit on ``memory://`` (docs/performance.md). A property test holds the
check to the round trip (``tests/unit/test_codec.py``).
"""

from __future__ import annotations

import orjson

from tandem.errors import InvalidOperation
from tandem.ot.delta import MAX_COUNT, Delete, Delta, Insert, validate_attributes

__all__ = ["decode_delta", "encode_delta", "loadable"]


def encode_delta(delta: Delta) -> bytes:
    """The stored JSON form of ``delta``; raises ``InvalidOperation`` if it would not load back."""
    try:
        data = orjson.dumps(delta.to_json())
    except orjson.JSONEncodeError as exc:  # e.g. a lone surrogate in an insert
        raise InvalidOperation(f"delta cannot be stored as JSON: {exc}") from exc
    loadable(delta)
    return data


def loadable(delta: Delta) -> None:
    """Raise ``InvalidOperation``, as ``Delta.from_json`` would on ``delta``'s JSON form,
    if a component breaks its rules: a count that is not an integer from 1 to
    ``MAX_COUNT``, an empty insert, attributes ``validate_attributes`` refuses
    (null only on a retain). A non-finite float attribute is refused too: JSON
    would have stored it as null.
    """
    for index, component in enumerate(delta.ops):
        if isinstance(component, Insert):
            if type(component.text) is not str or not component.text:
                raise InvalidOperation(f"component {index}: insert must be a non-empty string")
            attributes, allow_null = component.attributes, False
        else:
            count = component.count
            if type(count) is not int or not 0 < count <= MAX_COUNT:
                name = "delete" if isinstance(component, Delete) else "retain"
                raise InvalidOperation(
                    f"component {index}: {name} must be a positive integer up to {MAX_COUNT}"
                )
            if isinstance(component, Delete):
                continue
            attributes, allow_null = component.attributes, True
        if attributes:
            # to_json writes any mapping as an object: check what it would write.
            raw = attributes if type(attributes) is dict else dict(attributes)
            validate_attributes(raw, f"component {index}", allow_null=allow_null)


def decode_delta(data: bytes | str) -> Delta:
    """Parse a stored delta (validating it: a corrupt row raises, it never loads as wrong text)."""
    return Delta.from_json(orjson.loads(data))

"""The stored form of deltas: orjson bytes in, validated ``Delta`` out.

Every backend stores an op (and a snapshot's content) as the JSON text of
``Delta.to_json()``. This module owns that conversion and nothing else; it is
pure (no asyncio, no database drivers) so all three backends, and the
reference ``MemoryStore``, read and write byte-for-byte the same thing.

Encoding re-parses what it wrote with ``Delta.from_json``: an op that could not
be loaded back (``from_json`` is stricter than the builder, e.g. about a null
attribute on an insert) must fail *before* it is committed and acknowledged,
not later when the document is opened. That costs a few microseconds an op,
next to milliseconds for the fsync.
"""

from __future__ import annotations

import orjson

from tandem.errors import InvalidOperation
from tandem.ot.delta import Delta

__all__ = ["decode_delta", "encode_delta"]


def encode_delta(delta: Delta) -> bytes:
    """The stored JSON form of ``delta``; raises ``InvalidOperation`` if it would not load back."""
    try:
        data = orjson.dumps(delta.to_json())
    except orjson.JSONEncodeError as exc:  # e.g. a lone surrogate in an insert
        raise InvalidOperation(f"delta cannot be stored as JSON: {exc}") from exc
    Delta.from_json(orjson.loads(data))
    return data


def decode_delta(data: bytes | str) -> Delta:
    """Parse a stored delta (validating it: a corrupt row raises, it never loads as wrong text)."""
    return Delta.from_json(orjson.loads(data))

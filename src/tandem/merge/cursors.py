"""Code-point cursor indexes ⇄ Yjs relative positions on the replica's text.

Yjs clients (y-quill and friends) put a selection in awareness as
``{"anchor": relPos, "head": relPos}``, where a relative position in JSON is
``{"type": null, "tname": null, "item": {"client": C, "clock": K}, "assoc": 0}``
— the id of the character right of the caret, its clock counted in UTF-16
units — or ``{"type": null, "tname": "content", "item": null, "assoc": 0}``
at the end of the text.

pycrdt 0.14's ``StickyIndex`` counts the offset inside an item in UTF-8
**bytes** instead of UTF-16 units (pycrdt #382): ``new`` returns clock
``start + bytes`` and ``get_index`` reads a clock offset as a byte offset.
Both are exact while the item's text before the caret is ASCII. We correct
the error without knowing where the item starts: walking left from the caret
over the non-ASCII characters that are in the *same* item (the returned id
moves in step with the byte offset exactly while inside one item; a non-ASCII
character breaks that step, so a neighbouring item cannot pass for it), each
adds (its UTF-8 bytes − its UTF-16 units) to the error. After ``MAX_STEPS``
such characters we give up and return None (the caller sends no relative
position). Yrs panics (``BaseException``) also give None.

Pure: must not import asyncio, storage, bus or network code.
"""

from __future__ import annotations

from typing import Any, Final

from pycrdt import Assoc, StickyIndex

from tandem.merge.replica import TEXT_NAME, Replica
from tandem.merge.translate import utf8_length

__all__ = ["MAX_STEPS", "index_of", "item_at", "relative_position"]

#: Non-ASCII characters of one item we walk over before giving up.
MAX_STEPS: Final = 64


def _units(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1


def _raw(replica: Replica, byte: int) -> tuple[int, int] | None:
    """pycrdt's (client, clock) for a byte index: clock off by the item's non-ASCII excess."""
    try:
        data = StickyIndex.new(replica.text, byte, Assoc.AFTER).to_json()
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException:  # noqa: BLE001 - pyo3 panics are BaseExceptions
        return None
    item = data.get("item")
    if not isinstance(item, dict):
        return None
    return int(item["client"]), int(item["clock"])


def item_at(replica: Replica, index: int) -> tuple[int, int] | None:
    """The Yjs id (client, UTF-16 clock) of the character at code point ``index``.

    None at or past the end, or when it cannot be worked out (see the module docstring).
    """
    if not 0 <= index < len(replica.plain):
        return None
    byte = replica.plain.utf8_offset(index)
    plain = str(replica.plain)  # walked left below; one chunk (the usual) is not copied
    raw = _raw(replica, byte)
    if raw is None:
        return None
    client, clock = raw
    excess = 0
    j = index
    steps = 0
    prefix_bytes = byte
    while j > 0:
        j -= 1
        char = plain[j]
        size = utf8_length(char)
        prefix_bytes -= size
        if char.isascii():
            continue
        steps += 1
        if steps > MAX_STEPS:
            return None
        other = _raw(replica, prefix_bytes)
        if other != (client, clock - (byte - prefix_bytes)):
            break  # ``char`` is in an earlier item
        excess += size - _units(char)
    return client, clock - excess


def relative_position(replica: Replica, index: int) -> dict[str, Any] | None:
    """The Yjs relative position (JSON) of a caret at code point ``index``, or None."""
    if index >= len(replica.plain):
        return {"type": None, "tname": TEXT_NAME, "item": None, "assoc": 0}
    found = item_at(replica, index)
    if found is None:
        return None
    return {
        "type": None,
        "tname": None,
        "item": {"client": found[0], "clock": found[1]},
        "assoc": 0,
    }


def index_of(replica: Replica, position: object) -> int | None:
    """The code-point index of a Yjs relative position (JSON), or None if unknown here."""
    if not isinstance(position, dict):
        return None
    item = position.get("item")
    if item is None:
        return len(replica.plain) if position.get("tname") == TEXT_NAME else None
    if not isinstance(item, dict):
        return None
    try:
        target = (int(item["client"]), int(item["clock"]))
    except (KeyError, TypeError, ValueError):
        return None
    plain = str(replica.plain)
    try:
        sticky = StickyIndex.from_json(
            {"item": {"client": target[0], "clock": target[1]}, "assoc": 0}, replica.text
        )
        guess = sticky.get_index()
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException:  # noqa: BLE001 - pyo3 panics are BaseExceptions
        return None
    if guess is None:
        return None
    # ``guess`` counts the in-item offset (UTF-16 units) as bytes, so it is at or
    # before the real byte index: walk right from the character it falls in.
    data = plain.encode("utf-8") if not plain.isascii() else None
    start = guess if data is None else len(data[:guess].decode("utf-8", errors="ignore"))
    for index in range(start, min(len(plain), start + MAX_STEPS + 1)):
        found = item_at(replica, index)
        if found == target:
            return index
        if found is not None and found[0] == target[0] and found[1] > target[1]:
            break
    return None

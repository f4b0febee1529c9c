"""Decode a Yjs v1 update into a canonical, order-free form (for identity checks in tests).

Two docs hold the *same items* when every client's structs (id, origin,
right origin, parent, content) and the delete sets are equal. Raw update
bytes are no good for that: Yrs writes clients in hash-map order, which
differs between a live doc and one rebuilt from a snapshot. Covers what text
documents use: GC, Skip, and Items with Deleted, String, Format, Any or JSON
content; anything else raises ``ValueError``.
"""

from __future__ import annotations

from typing import Any

from tandem.merge.yproto import Decoder

Struct = tuple[Any, ...]


class _Reader(Decoder):
    """lib0 decoding from the server's own ``Decoder``, plus reading ``Any`` values."""

    def uint(self) -> int:
        return self.var_uint()

    def string(self) -> str:
        return self.var_string()

    def any(self) -> Any:
        kind = self.byte()
        if kind == 127:
            return None  # undefined
        if kind == 126:
            return None
        if kind == 125:  # varInt
            first = self.byte()
            negative = bool(first & 0x40)
            number, shift = first & 0x3F, 6
            while first & 0x80:
                first = self.byte()
                number |= (first & 0x7F) << shift
                shift += 7
            return -number if negative else number
        if kind == 124:
            return ("f32", self.take(4))
        if kind == 123:
            return ("f64", self.take(8))
        if kind == 122:
            return ("i64", self.take(8))
        if kind in (121, 120):
            return kind == 120
        if kind == 119:
            return self.string()
        if kind == 118:
            return tuple(sorted((self.string(), self.any()) for _ in range(self.uint())))
        if kind == 117:
            return tuple(self.any() for _ in range(self.uint()))
        raise ValueError(f"unsupported Any type {kind}")


def _id(reader: _Reader) -> tuple[int, int]:
    return reader.uint(), reader.uint()


def canonical(update: bytes) -> tuple[tuple[Struct, ...], tuple[Struct, ...]]:
    """``(structs, deleted ids)``, sorted, one struct per unit: equal for identical items.

    An item's parent is only written when it has no origins, so a unit split off
    an item reports no parent; GC structs (garbage-collected deleted items) are
    kept as ranges.
    """
    reader = _Reader(update)
    structs: list[Struct] = []
    for _ in range(reader.uint()):
        count = reader.uint()
        client = reader.uint()
        clock = reader.uint()
        for _ in range(count):
            info = reader.byte()
            ref = info & 0x1F
            if ref == 0:
                length = reader.uint()
                structs.append((client, clock, "gc", length))
                clock += length
                continue
            if ref == 10:
                clock += reader.uint()
                continue
            origin = _id(reader) if info & 0x80 else None
            right = _id(reader) if info & 0x40 else None
            parent: Any = None
            sub = None
            if not info & 0xC0:
                parent = reader.string() if reader.uint() == 1 else _id(reader)
                if info & 0x20:
                    sub = reader.string()
            if ref == 1:
                length = reader.uint()
                content: Any = ("deleted", length)
            elif ref == 4:
                text = reader.string()
                length = len(text.encode("utf-16-le")) // 2
                content = ("string", text)
            elif ref == 6:
                content = ("format", reader.string(), reader.string())
                length = 1
            elif ref == 8:
                values = tuple(reader.any() for _ in range(reader.uint()))
                length = len(values)
                content = ("any", values)
            elif ref == 2:
                values = tuple(reader.string() for _ in range(reader.uint()))
                length = len(values)
                content = ("json", values)
            else:
                raise ValueError(f"unsupported content ref {ref}")
            if content[0] == "string":
                # One struct per character: Yrs splits and squashes blocks differently
                # depending on history, but a split keeps every unit's identity.
                for char in content[1]:
                    structs.append((client, clock, origin, right, parent, sub, ("string", char)))
                    origin = (client, clock + len(char.encode("utf-16-le")) // 2 - 1)
                    clock += len(char.encode("utf-16-le")) // 2
                    parent = sub = None
                continue
            if content[0] == "deleted":
                for _ in range(length):
                    structs.append((client, clock, origin, right, parent, sub, ("deleted", 1)))
                    origin = (client, clock)
                    clock += 1
                    parent = sub = None
                continue
            structs.append((client, clock, origin, right, parent, sub, content))
            clock += length
    deleted: set[tuple[int, int]] = set()
    for _ in range(reader.uint()):
        client = reader.uint()
        for _ in range(reader.uint()):
            start, length = reader.uint(), reader.uint()
            deleted.update((client, start + k) for k in range(length))
    return tuple(sorted(structs, key=repr)), tuple(sorted(deleted))

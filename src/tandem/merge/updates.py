"""Read the clock ranges a Yjs v1 update carries, without applying it.

pycrdt's ``get_state(update)`` returns an empty state vector for an update
whose structs depend on changes the receiver lacks (Yrs keeps those pending),
so it cannot tell whether a merge took everything. ``clock_ends`` walks the
struct section of the v1 encoding itself and returns, per client, the clock
right after its last struct; after a merge, a replica whose state vector is
below one of these holds pending structs or deletes: the update had missing
dependencies.

Every content type of the v1 format is skipped correctly (Deleted, JSON,
Binary, String, Embed, Format, Type, Any, Doc); a malformed update raises
``ValueError``.

Pure: must not import asyncio, storage, bus or network code.
"""

from __future__ import annotations

from tandem.merge.yproto import Decoder

__all__ = ["clock_ends"]


class _Reader(Decoder):
    """lib0 decoding (``yproto.Decoder``) plus skipping over ``Any`` values."""

    def uint(self) -> int:
        return self.var_uint()

    def string(self) -> str:
        return self.var_string()

    def skip(self, size: int) -> None:
        self.take(size)

    def skip_any(self) -> None:
        kind = self.byte()
        if kind in (127, 126, 121, 120):
            return
        if kind == 125:  # varInt
            while self.byte() & 0x80:
                pass
        elif kind == 124:
            self.skip(4)
        elif kind in (123, 122):
            self.skip(8)
        elif kind == 119:
            self.skip(self.uint())
        elif kind == 118:
            for _ in range(self.uint()):
                self.skip(self.uint())
                self.skip_any()
        elif kind == 117:
            for _ in range(self.uint()):
                self.skip_any()
        elif kind == 116:
            self.skip(self.uint())
        else:
            raise ValueError(f"unknown Any type {kind}")


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def clock_ends(update: bytes) -> dict[int, int]:
    """Per client, the clock a receiver must reach to hold all of ``update`` (v1 encoding).

    That is the clock after its last struct, or after the last id its delete
    set deletes, whichever is higher.
    """
    reader = _Reader(update)
    ends: dict[int, int] = {}
    for _ in range(reader.uint()):
        count = reader.uint()
        client = reader.uint()
        clock = reader.uint()
        for _ in range(count):
            info = reader.byte()
            ref = info & 0x1F
            if ref in (0, 10):  # GC, Skip
                clock += reader.uint()
                continue
            if info & 0x80:
                reader.uint()
                reader.uint()
            if info & 0x40:
                reader.uint()
                reader.uint()
            if not info & 0xC0:
                if reader.uint() == 1:
                    reader.string()
                else:
                    reader.uint()
                    reader.uint()
                if info & 0x20:
                    reader.string()
            if ref == 1:  # Deleted
                clock += reader.uint()
            elif ref == 2:  # JSON
                size = reader.uint()
                for _ in range(size):
                    reader.string()
                clock += size
            elif ref == 3:  # Binary
                reader.skip(reader.uint())
                clock += 1
            elif ref == 4:  # String
                clock += _utf16_units(reader.string())
            elif ref == 5:  # Embed
                reader.string()
                clock += 1
            elif ref == 6:  # Format
                reader.string()
                reader.string()
                clock += 1
            elif ref == 7:  # Type
                if reader.uint() in (3, 5):  # XmlElement, XmlHook carry a name
                    reader.string()
                clock += 1
            elif ref == 8:  # Any
                size = reader.uint()
                for _ in range(size):
                    reader.skip_any()
                clock += size
            elif ref == 9:  # Doc
                reader.string()
                reader.skip_any()
                clock += 1
            else:
                raise ValueError(f"unknown content type {ref}")
        ends[client] = max(ends.get(client, 0), clock)
    for _ in range(reader.uint()):  # the delete set: deleting needs the items
        client = reader.uint()
        for _ in range(reader.uint()):
            start = reader.uint()
            end = start + reader.uint()
            ends[client] = max(ends.get(client, 0), end)
    return ends

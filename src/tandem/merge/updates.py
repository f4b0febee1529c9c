"""Read what a Yjs v1 update carries and needs, without applying it.

pycrdt's ``get_state(update)`` returns an empty state vector for an update
whose structs depend on changes the receiver lacks (Yrs keeps those pending),
so it cannot tell whether a merge would take everything. This module walks
the v1 encoding itself:

* ``clock_ends`` — per client, the clock right after its last struct (or the
  last id its delete set deletes); after a merge, a replica whose state vector
  is below one of these holds pending structs or deletes;
* ``holds_formats`` — does the update insert a formatting item (the replica
  tracks whether it has ever held one: see ``Replica.format_free``);
* ``missing_dependency`` — checked *before* a merge: the first id a receiver
  with a given state vector lacks to integrate the whole update (a gap in a
  client's clocks, an origin, right origin or parent it has never seen, a
  delete of an item it does not have), else None. It follows Yjs's
  ``getMissing`` rule: a struct may depend on structs of the same update,
  integrated in any order, so it is decided as a fixpoint.

Every content type of the v1 format is skipped correctly (Deleted, JSON,
Binary, String, Embed, Format, Type, Any, Doc); a malformed update raises
``ValueError``.

Pure: must not import asyncio, storage, bus or network code.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass

from tandem.merge.yproto import Decoder

__all__ = [
    "DeleteSet",
    "clock_ends",
    "delete_set",
    "holds_formats",
    "holds_update",
    "missing_dependency",
    "new_struct_clients",
]

#: Per client, the deleted clock ranges ``[start, end)``, sorted and merged.
DeleteSet = dict[int, list[tuple[int, int]]]


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


@dataclass(frozen=True, slots=True)
class _Struct:
    """One struct of an update: its clock range and the ids it refers to."""

    clock: int
    end: int
    #: Origin, right origin and parent ids as (client, clock).
    refers: tuple[tuple[int, int], ...] = ()
    #: A Skip: a gap the update does not fill (never integrated).
    skip: bool = False


@dataclass(frozen=True, slots=True)
class _Update:
    structs: dict[int, list[_Struct]]
    #: The delete set as (client, start, end) ranges.
    deletes: list[tuple[int, int, int]]
    #: Does any struct carry formatting (a ``ContentFormat`` item)?
    formats: bool = False


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _content_length(reader: _Reader, ref: int) -> int:
    """Skip an item's content; its length in clock units."""
    if ref == 1:  # Deleted
        return reader.uint()
    if ref == 2:  # JSON
        size = reader.uint()
        for _ in range(size):
            reader.string()
        return size
    if ref == 3:  # Binary
        reader.skip(reader.uint())
        return 1
    if ref == 4:  # String
        return _utf16_units(reader.string())
    if ref == 5:  # Embed
        reader.string()
        return 1
    if ref == 6:  # Format
        reader.string()
        reader.string()
        return 1
    if ref == 7:  # Type
        if reader.uint() in (3, 5):  # XmlElement, XmlHook carry a name
            reader.string()
        return 1
    if ref == 8:  # Any
        size = reader.uint()
        for _ in range(size):
            reader.skip_any()
        return size
    if ref == 9:  # Doc
        reader.string()
        reader.skip_any()
        return 1
    raise ValueError(f"unknown content type {ref}")


def _read(update: bytes) -> _Update:
    reader = _Reader(update)
    structs: dict[int, list[_Struct]] = {}
    formats = False
    for _ in range(reader.uint()):
        count = reader.uint()
        client = reader.uint()
        clock = reader.uint()
        found = structs.setdefault(client, [])
        for _ in range(count):
            info = reader.byte()
            ref = info & 0x1F
            if ref in (0, 10):  # GC, Skip
                size = reader.uint()
                found.append(_Struct(clock, clock + size, skip=ref == 10))
                clock += size
                continue
            refers: list[tuple[int, int]] = []
            if info & 0x80:
                refers.append((reader.uint(), reader.uint()))
            if info & 0x40:
                refers.append((reader.uint(), reader.uint()))
            if not info & 0xC0:
                if reader.uint() == 1:
                    reader.string()  # a root type, by name
                else:
                    refers.append((reader.uint(), reader.uint()))
                if info & 0x20:
                    reader.string()
            size = _content_length(reader, ref)
            formats = formats or ref == 6
            found.append(_Struct(clock, clock + size, tuple(refers)))
            clock += size
    deletes: list[tuple[int, int, int]] = []
    for _ in range(reader.uint()):
        client = reader.uint()
        for _ in range(reader.uint()):
            start = reader.uint()
            deletes.append((client, start, start + reader.uint()))
    return _Update(structs, deletes, formats)


def clock_ends(update: bytes) -> dict[int, int]:
    """Per client, the clock a receiver must reach to hold all of ``update`` (v1 encoding).

    That is the clock after its last struct, or after the last id its delete
    set deletes, whichever is higher.
    """
    read = _read(update)
    ends: dict[int, int] = {}
    for client, structs in read.structs.items():
        for struct in structs:
            if not struct.skip:
                ends[client] = max(ends.get(client, 0), struct.end)
    for client, _, end in read.deletes:
        ends[client] = max(ends.get(client, 0), end)
    return ends


def holds_formats(update: bytes) -> bool:
    """Does ``update`` (v1) insert any formatting item (a Yjs ``ContentFormat``)?"""
    return _read(update).formats


def missing_dependency(update: bytes, state: Mapping[int, int]) -> tuple[int, int] | None:
    """The first id (client, clock) a receiver at ``state`` lacks to integrate ``update``.

    ``state`` is the receiver's state vector (client → next clock). None means
    a merge integrates every struct and applies every delete of the update.
    """
    read = _read(update)
    available = dict(state)
    queues = {client: list(reversed(structs)) for client, structs in read.structs.items()}
    progress = True
    while progress:
        progress = False
        for client, queue in queues.items():
            while queue:
                struct = queue[-1]
                if not struct.skip:
                    if struct.clock > available.get(client, 0):
                        break
                    if any(
                        other != client and clock >= available.get(other, 0)
                        for other, clock in struct.refers
                    ):
                        break
                    available[client] = max(available.get(client, 0), struct.end)
                queue.pop()
                progress = True
    for client, queue in queues.items():
        if queue:
            struct = queue[-1]
            if struct.clock > available.get(client, 0):
                return client, available.get(client, 0)
            for other, clock in struct.refers:
                if other != client and clock >= available.get(other, 0):
                    return other, clock
    for client, _, end in read.deletes:
        if end > available.get(client, 0):
            return client, end - 1
    return None


def delete_set(update: bytes) -> DeleteSet:
    """The delete set of ``update`` (for a document's full state: everything it deleted)."""
    merged: DeleteSet = {}
    for client, start, end in sorted(_read(update).deletes):
        ranges = merged.setdefault(client, [])
        if ranges and start <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], end))
        else:
            ranges.append((start, end))
    return merged


def holds_update(state: Mapping[int, int], deleted: DeleteSet, update: bytes) -> bool:
    """Does a document with state vector ``state`` and delete set ``deleted`` already hold
    everything ``update`` carries (Yjs's ``snapshotContainsUpdate``)?

    Costs the size of ``update`` (and a binary search per delete), never the
    document's: the caller keeps ``deleted`` for as long as the document is unchanged.
    """
    read = _read(update)
    for client, structs in read.structs.items():
        known = state.get(client, 0)
        if any(not struct.skip and struct.end > known for struct in structs):
            return False
    for client, start, end in read.deletes:
        ranges = deleted.get(client, [])
        at = bisect_right(ranges, (start, float("inf"))) - 1
        if at < 0 or ranges[at][1] < end:
            return False
    return True


def new_struct_clients(update: bytes, state: Mapping[int, int]) -> set[int]:
    """The client ids under which ``update`` creates items a receiver at ``state`` lacks.

    Deletes are not counted: deleting another client's item is an ordinary edit.
    """
    return {
        client
        for client, structs in _read(update).structs.items()
        if any(not struct.skip and struct.end > state.get(client, 0) for struct in structs)
    }

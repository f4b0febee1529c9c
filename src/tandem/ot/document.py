"""A rich-text document held in bounded chunks, and ``apply``.

A document is conceptually a delta of inserts. Held as one delta, a keystroke
into a few-MB document would copy the whole text (slice, then join). Here the
text is kept as a list of ``(text, attributes)`` chunks of at most ``CHUNK``
code points, plus their running end offsets; applying an op finds the first
touched chunk by binary search, rebuilds only the chunks the op touches and
shares every other chunk with the previous version. So a keystroke costs
O(log n + touched chunks) Python work, a C-level copy of the chunk list and a
shift of the end offsets after the edit, and never copies the document's text.
Edited text is re-cut into even chunks and small edited pieces are folded into
a neighbour, so chunks stay between ``CHUNK // 2`` and ``CHUNK`` code points
except where formatting changes: edits never fragment the document.

Documents are values: ``apply`` returns a new ``Document`` and leaves the old
one intact (the sequencer and the CRDT bridge keep old versions around).
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterator
from itertools import accumulate
from typing import Final

import orjson

from tandem.errors import InvalidOperation, OperationTooLong
from tandem.ot.attributes import compose_attributes
from tandem.ot.delta import Attributes, Component, Delete, Delta, Insert, Retain, same_attributes

__all__ = ["CHUNK", "Document", "apply"]

#: Largest chunk, in code points. Small enough that rewriting one is cheap,
#: large enough that a few-MB document has only thousands of chunks.
CHUNK: Final = 2048

Chunk = tuple[str, Attributes | None]


class Document:
    """Rich text: a sequence of formatted runs, compared by content."""

    # The chunks' running end offsets are kept lazily so that a keystroke costs
    # no per-chunk Python work: the true end of chunk ``j`` is ``_raw_ends[j]``,
    # plus ``_shift`` when ``j >= _shift_from``. A keystroke into the chunk the
    # shift starts at only changes ``_shift``; ``_raw_ends`` lists are shared
    # between versions and never mutated.
    __slots__ = ("_chunks", "_raw_ends", "_shift_from", "_shift")

    def __init__(self, content: Delta | str | None = None) -> None:
        chunks: list[Chunk] = []
        if isinstance(content, str):
            _flush(chunks, [(content, None)])
        elif content is not None:
            runs: list[Chunk] = []
            for component in content.ops:
                if type(component) is not Insert:
                    raise InvalidOperation("a document may contain only inserts")
                runs.append((component.text, component.attributes))
            _flush(chunks, runs)
        self._chunks = chunks
        self._raw_ends = list(accumulate(len(text) for text, _ in chunks))
        self._shift_from = 0
        self._shift = 0

    @property
    def _ends(self) -> list[int]:
        """The chunks' running end offsets, exactly (a new list when a shift is pending)."""
        ends, shift, at = self._raw_ends, self._shift, self._shift_from
        if not shift:
            return ends
        return ends[:at] + [end + shift for end in ends[at:]]

    def _find(self, position: int) -> tuple[int, int]:
        """``(index, start)``: the first chunk ending after ``position``, and where it starts."""
        ends, shift, at = self._raw_ends, self._shift, self._shift_from
        if shift:
            index = bisect_right(ends, position, 0, at)
            if index == at:
                index = bisect_right(ends, position - shift, at)
        else:
            index = bisect_right(ends, position)
        if not index:
            return 0, 0
        return index, ends[index - 1] + (shift if index > at else 0)

    # -- reading ------------------------------------------------------------

    def __len__(self) -> int:
        ends = self._raw_ends
        return ends[-1] + self._shift if ends else 0

    def text(self) -> str:
        """The plain text, formatting dropped."""
        return "".join(text for text, _ in self._chunks)

    def runs(self) -> Iterator[tuple[str, Attributes | None]]:
        """Maximal runs of equally formatted text, in order."""
        pending: list[str] = []
        current: Attributes | None = None
        for text, attributes in self._chunks:
            if pending and not same_attributes(attributes, current):
                yield "".join(pending), current
                pending = []
            pending.append(text)
            current = attributes
        if pending:
            yield "".join(pending), current

    def fingerprint(self) -> str:
        """A short digest of the content (text and attributes), the same in every client.

        SHA-256 of the canonical delta as compact JSON with sorted keys, as 32
        hex digits. A re-join sends it with its version (docs/protocol.md,
        "Re-joining from another history").
        """
        canonical = orjson.dumps(self.to_delta().to_json(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()[:32]

    def to_delta(self) -> Delta:
        """The canonical delta of inserts for this document."""
        delta = Delta()
        delta.ops = [Insert(text, attributes) for text, attributes in self.runs()]
        return delta

    def slice(self, start: int, end: int) -> list[tuple[str, Attributes | None]]:
        """The formatted runs covering ``[start, end)`` (chunk-granular, unmerged)."""
        out: list[tuple[str, Attributes | None]] = []
        if end <= start:
            return out
        chunks = self._chunks
        i, position = self._find(start)
        while i < len(chunks) and position < end:
            text, attributes = chunks[i]
            lo = max(start - position, 0)
            hi = min(end - position, len(text))
            out.append((text[lo:hi], attributes))
            position += len(text)
            i += 1
        return out

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Delta):
            return self.to_delta() == other
        if not isinstance(other, Document):
            return NotImplemented
        if len(self) != len(other):
            return False
        mine, theirs = list(self.runs()), list(other.runs())
        return len(mine) == len(theirs) and all(
            text == other_text and same_attributes(attributes, other_attributes)
            for (text, attributes), (other_text, other_attributes) in zip(mine, theirs, strict=True)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        text = self.text()
        shown = text if len(text) <= 60 else text[:57] + "..."
        return f"Document({shown!r}, runs={len(list(self.runs()))})"

    # -- applying -----------------------------------------------------------

    def apply(self, op: Delta) -> Document:
        """This document after ``op``; raises ``OperationTooLong`` if op reaches past the end.

        The document is left unchanged when it raises: the length is checked
        before anything is built.
        """
        ops = op.ops
        if not ops:
            return self
        if len(ops) <= 3:
            edited = self._apply_edit(ops)
            if edited is not None:
                return edited
        chunks, ends = self._chunks, self._ends
        total = ends[-1] if ends else 0
        reach = 0
        for component in ops:
            if type(component) is not Insert:
                reach += component.count  # type: ignore[union-attr]
        if reach > total:
            raise OperationTooLong(
                f"op reaches position {reach} but the document has {total} characters"
            )
        stop = len(ops)
        last = ops[-1]
        if type(last) is Retain and not last.attributes:
            stop -= 1  # a trailing plain retain changes nothing
        out: list[Chunk] = []  # finished chunks
        region: list[Chunk] = []  # edited pieces, not yet cut into chunks
        # out[:shared] is chunks[:shared], so their ends are too; -1 until out
        # first gets anything else (an edited piece, or chunks after a deletion).
        shared = -1
        index = 0  # next chunk not yet consumed
        offset = 0  # code points of chunks[index] already consumed
        for i in range(stop):
            component = ops[i]
            kind = type(component)
            if kind is Insert:
                region.append((component.text, component.attributes))  # type: ignore[union-attr]
                continue
            count = component.count  # type: ignore[union-attr]
            attributes = component.attributes if kind is Retain else None  # type: ignore[union-attr]
            if kind is Retain and not attributes:
                target = (ends[index - 1] if index else 0) + offset + count
                skip_to = bisect_right(ends, target, index)
                if skip_to == index:  # ends inside the current chunk
                    text, chunk_attributes = chunks[index]
                    region.append((text[offset : offset + count], chunk_attributes))
                    offset += count
                    continue
                if offset:
                    text, chunk_attributes = chunks[index]
                    region.append((text[offset:], chunk_attributes))
                    index += 1
                # Whole chunks in between are shared with this version, by reference.
                if shared < 0 and (region or index != len(out)):
                    shared = max(len(out) - 1, 0)  # _flush may take back out[-1]
                _flush(out, region)
                out.extend(chunks[index:skip_to])
                index = skip_to
                offset = target - ends[index - 1]
                if offset:
                    text, chunk_attributes = chunks[index]
                    region.append((text[:offset], chunk_attributes))
                continue
            while count:
                text, chunk_attributes = chunks[index]
                available = len(text) - offset
                take = available if available <= count else count
                if kind is Retain:
                    piece = text if take == len(text) else text[offset : offset + take]
                    region.append((piece, compose_attributes(chunk_attributes, attributes, False)))
                count -= take
                offset += take
                if offset == len(text):
                    index += 1
                    offset = 0
        if offset:
            text, chunk_attributes = chunks[index]
            region.append((text[offset:], chunk_attributes))
            index += 1
        if index < len(chunks) and sum(len(text) for text, _ in region) < CHUNK // 2:
            # Fold a small edited region into its untouched neighbour so that
            # keystrokes and deletes do not fragment the document.
            region.append(chunks[index])
            index += 1
        if shared < 0 and (region or index != len(out)):
            shared = max(len(out) - 1, 0)
        _flush(out, region)
        # New ends: the shared prefix's are unchanged, the edited chunks' are
        # counted, the untouched tail's are shifted (no len() per chunk).
        if shared < 0:
            shared = len(out)
        new_ends = ends[:shared]
        end = new_ends[-1] if shared else 0
        for text, _ in out[shared:]:
            end += len(text)
            new_ends.append(end)
        shift = end - (ends[index - 1] if index else 0)
        new_ends.extend([old + shift for old in ends[index:]] if shift else ends[index:])
        out.extend(chunks[index:])
        document = Document.__new__(Document)
        document._chunks = out
        document._raw_ends = new_ends
        document._shift_from = 0
        document._shift = 0
        return document

    def _apply_edit(self, ops: list[Component]) -> Document | None:
        """``apply`` for one keystroke-sized edit inside one chunk, or None for the general path.

        Handles an optional plain retain, then an insert and/or a delete, when
        the edit stays inside one chunk, the insert has that chunk's
        formatting, and the chunk stays between ``CHUNK // 2`` and ``CHUNK``
        code points (a lone chunk may be smaller). That is nearly every op a
        server sees. The result equals the general path's; only a chunk
        boundary may fall elsewhere, which no reader can observe.
        """
        first = ops[0]
        kind = type(first)
        position = 0
        at = 0
        if kind is Retain:
            if first.attributes or len(ops) == 1:  # type: ignore[union-attr]
                return None
            position = first.count  # type: ignore[union-attr]
            at = 1
            first = ops[1]
            kind = type(first)
        inserted = ""
        attributes: Attributes | None = None
        deleted = 0
        if kind is Insert:
            inserted = first.text  # type: ignore[union-attr]
            attributes = first.attributes  # type: ignore[union-attr]
            at += 1
            if at < len(ops):
                last = ops[at]
                if type(last) is not Delete:
                    return None
                deleted = last.count
                at += 1
        elif kind is Delete:
            deleted = first.count  # type: ignore[union-attr]
            at += 1
        else:
            return None
        chunks = self._chunks
        if at != len(ops) or not chunks:
            return None
        ends, shift, shift_from = self._raw_ends, self._shift, self._shift_from
        if position + deleted > ends[-1] + shift:
            return None  # the general path raises OperationTooLong
        index, start = self._find(position)
        if index == len(chunks):  # at the very end: append to the last chunk
            index -= 1
            start = position - len(chunks[index][0])
        text, chunk_attributes = chunks[index]
        size = len(text)
        offset = position - start
        if offset + deleted > size:
            return None
        length = size + len(inserted) - deleted
        if length > CHUNK or (length < CHUNK // 2 and (not length or len(chunks) > 1)):
            return None  # the chunk must be cut or folded into a neighbour
        if (
            inserted
            and attributes is not chunk_attributes
            and not same_attributes(attributes, chunk_attributes)
        ):
            return None
        out = chunks.copy()
        out[index] = (text[:offset] + inserted + text[offset + deleted :], chunk_attributes)
        # Move the pending shift to start at this chunk: re-base the raw ends in
        # between (none when typing goes on in the same chunk).
        if shift and index != shift_from:
            if index > shift_from:
                between = [end + shift for end in ends[shift_from:index]]
            else:
                between = [end - shift for end in ends[index:shift_from]]
            low, high = sorted((index, shift_from))
            ends = ends[:low] + between + ends[high:]
        document = Document.__new__(Document)
        document._chunks = out
        document._raw_ends = ends
        document._shift_from = index
        document._shift = shift + length - size
        return document


def _flush(out: list[Chunk], region: list[Chunk]) -> None:
    """Move ``region``'s pieces onto ``out`` as chunks, and clear it.

    Equally formatted neighbours are joined (with ``out``'s last chunk too,
    when that one is small), then each run is cut into even chunks of at most
    ``CHUNK`` code points, so no run leaves chunks under ``CHUNK // 2`` behind
    except where formatting changes.
    """
    if not region:
        return
    if out and len(out[-1][0]) < CHUNK // 2 and same_attributes(out[-1][1], region[0][1]):
        region.insert(0, out.pop())
    parts: list[str] = []
    current: Attributes | None = None
    for text, attributes in region:
        if not text:
            continue
        if parts and not same_attributes(attributes, current):
            _cut(out, "".join(parts), current)
            parts = []
        parts.append(text)
        current = attributes
    if parts:
        _cut(out, "".join(parts), current)
    region.clear()


def _cut(out: list[Chunk], text: str, attributes: Attributes | None) -> None:
    """Append one run as evenly sized chunks of at most ``CHUNK`` code points."""
    length = len(text)
    if length <= CHUNK:
        out.append((text, attributes))
        return
    size = -(-length // -(-length // CHUNK))  # ceil(length / number of chunks)
    for begin in range(0, length, size):
        out.append((text[begin : begin + size], attributes))


def apply(document: Document | Delta | str, op: Delta) -> Document:
    """Apply ``op`` to ``document``; the input is left unchanged.

    Raises ``OperationTooLong`` when ``op`` retains or deletes past the end.
    A ``Delta`` or ``str`` document is converted first.
    """
    if not isinstance(document, Document):
        document = Document(document)
    return document.apply(op)

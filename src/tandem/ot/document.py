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
from tandem.ot.delta import Attributes, Delta, Insert, Retain, same_attributes

__all__ = ["CHUNK", "Document", "apply"]

#: Largest chunk, in code points. Small enough that rewriting one is cheap,
#: large enough that a few-MB document has only thousands of chunks.
CHUNK: Final = 2048

Chunk = tuple[str, Attributes | None]


class Document:
    """Rich text: a sequence of formatted runs, compared by content."""

    __slots__ = ("_chunks", "_ends")

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
        self._ends = list(accumulate(len(text) for text, _ in chunks))

    # -- reading ------------------------------------------------------------

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

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
        chunks, ends = self._chunks, self._ends
        i = bisect_right(ends, start)
        position = ends[i - 1] if i else 0
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
        document._ends = new_ends
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

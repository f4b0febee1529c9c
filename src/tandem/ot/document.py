"""A rich-text document held in bounded chunks, and ``apply``.

A document is conceptually a delta of inserts. Held as one delta, a keystroke
into a few-MB document would copy the whole text (slice, then join). Here the
text is kept as a list of ``(text, attributes)`` chunks of at most ``CHUNK``
code points, plus their running end offsets; applying an op finds the first
touched chunk by binary search, rebuilds only the chunks the op touches and
shares every other chunk with the previous version. So a keystroke costs
O(log n + touched chunks) Python work and one C-level copy of the chunk list,
and never copies the document's text.

Documents are values: ``apply`` returns a new ``Document`` and leaves the old
one intact (the sequencer and the CRDT bridge keep old versions around).
Pure: no I/O.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from itertools import accumulate
from typing import Final

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
            _append(chunks, content, None)
        elif content is not None:
            for component in content.ops:
                if type(component) is not Insert:
                    raise InvalidOperation("a document may contain only inserts")
                _append(chunks, component.text, component.attributes)
        self._chunks = chunks
        self._ends = list(accumulate(len(text) for text, _ in chunks))

    @classmethod
    def _from_chunks(cls, chunks: list[Chunk]) -> Document:
        document = cls.__new__(cls)
        document._chunks = chunks
        document._ends = list(accumulate(len(text) for text, _ in chunks))
        return document

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
        """This document after ``op``; raises ``OperationTooLong`` if op reaches past the end."""
        ops = op.ops
        if not ops:
            return self
        chunks, ends = self._chunks, self._ends
        total = ends[-1] if ends else 0
        out: list[Chunk] = []
        index = 0  # next unconsumed chunk
        offset = 0  # code points of chunks[index] already consumed
        position = 0  # document position of the cursor
        start = 0
        first = ops[0]
        if type(first) is Retain and not first.attributes:
            # Copy the untouched prefix as references, found by binary search.
            if first.count > total:
                raise OperationTooLong(
                    f"op retains {first.count} characters but the document has {total}"
                )
            index = bisect_right(ends, first.count)
            out.extend(chunks[:index])
            position = ends[index - 1] if index else 0
            offset = first.count - position
            position = first.count
            if offset:
                _append(out, chunks[index][0][:offset], chunks[index][1])
            start = 1
        for component in ops[start:] if start else ops:
            kind = type(component)
            if kind is Insert:
                _append(out, component.text, component.attributes)  # type: ignore[union-attr]
                continue
            count = component.count  # type: ignore[union-attr]
            if position + count > total:
                raise OperationTooLong(
                    f"op reaches position {position + count} "
                    f"but the document has {total} characters"
                )
            position += count
            is_retain = kind is Retain
            attributes = component.attributes if is_retain else None  # type: ignore[union-attr]
            while count:
                text, chunk_attributes = chunks[index]
                available = len(text) - offset
                take = available if available <= count else count
                if is_retain:
                    piece = text if take == len(text) else text[offset : offset + take]
                    if attributes:
                        new_attributes = compose_attributes(chunk_attributes, attributes, False)
                    else:
                        new_attributes = chunk_attributes
                    _append(out, piece, new_attributes)
                count -= take
                offset += take
                if offset == len(text):
                    index += 1
                    offset = 0
        if offset:
            text, chunk_attributes = chunks[index]
            _append(out, text[offset:], chunk_attributes)
            index += 1
        if index < len(chunks):
            if out and index and len(out[-1][0]) < CHUNK // 4:
                # Merge a small edited chunk into its untouched neighbour so
                # repeated deletes do not fragment the document.
                text, chunk_attributes = chunks[index]
                _append(out, text, chunk_attributes)
                index += 1
            out.extend(chunks[index:])
        return Document._from_chunks(out)


def _append(chunks: list[Chunk], text: str, attributes: Attributes | None) -> None:
    """Append ``text``, merging into the last chunk while it stays under ``CHUNK``."""
    if not text:
        return
    if chunks:
        last_text, last_attributes = chunks[-1]
        same = same_attributes(last_attributes, attributes)
        if same and len(last_text) + len(text) <= CHUNK:
            chunks[-1] = (last_text + text, attributes)
            return
        if same and len(last_text) < CHUNK:
            room = CHUNK - len(last_text)
            chunks[-1] = (last_text + text[:room], attributes)
            text = text[room:]
    for begin in range(0, len(text), CHUNK):
        chunks.append((text[begin : begin + CHUNK], attributes))


def apply(document: Document | Delta | str, op: Delta) -> Document:
    """Apply ``op`` to ``document``; the input is left unchanged.

    Raises ``OperationTooLong`` when ``op`` retains or deletes past the end.
    A ``Delta`` or ``str`` document is converted first.
    """
    if not isinstance(document, Document):
        document = Document(document)
    return document.apply(op)

"""A document's plain text in chunks, for code point ⇄ UTF-8 offsets without copying it.

The replica converts every op's code-point offsets into the UTF-8 byte
offsets Yrs counts in (``translate``), which needs the text before the op.
Kept as one ``str``, every op sliced and re-joined the whole document: 4 µs
per op at a thousand characters, over 200 µs at a million, milliseconds at
the ten million ``max_document_chars`` allows (docs/performance.md, item 15).
Here the text is a list of chunks of at most ``chunk`` code points, each with
its UTF-8 length: an op rebuilds only the chunks it touches (plus two lists
of running totals, one entry per chunk), and an offset is a bisection and at
most one chunk's encoding. A document of up to ``chunk`` code points — every
benchmark document, most real ones — is one chunk, handled as a plain
``str`` is.

Immutable: ``apply`` returns a new ``PlainText`` sharing the untouched chunks.
Pure: must not import asyncio, storage, bus or network code.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
from typing import ClassVar

from tandem.ot.delta import Delete, Delta, Insert, Retain

__all__ = ["PlainText"]


def _utf8(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (free for ASCII), as ``translate.utf8_length``."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


class PlainText:
    """Text as chunks, with running code point and UTF-8 byte totals per chunk."""

    __slots__ = ("_chunks", "_sizes", "_ends", "_byte_ends")

    #: Most code points in a chunk.
    chunk: ClassVar[int] = 16_384

    def __init__(self, text: str = "") -> None:
        step = self.chunk
        chunks = [text[i : i + step] for i in range(0, len(text), step)]
        self._set(chunks, [_utf8(piece) for piece in chunks])

    def _set(self, chunks: list[str], sizes: list[int]) -> None:
        self._chunks = chunks
        self._sizes = sizes  # UTF-8 bytes of each chunk
        self._ends = list(accumulate(map(len, chunks)))
        self._byte_ends = list(accumulate(sizes))

    # -- reading ------------------------------------------------------------

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __str__(self) -> str:
        return "".join(self._chunks)

    def __eq__(self, other: object) -> bool:
        """Equal text, whether ``other`` is a ``PlainText`` or a ``str``."""
        if isinstance(other, PlainText):
            return len(self) == len(other) and str(self) == str(other)
        if isinstance(other, str):
            return str(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to a str, which hashes otherwise

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} code points in {len(self._chunks)} chunks)"

    @property
    def single(self) -> str | None:
        """The whole text when it is one chunk (no copy; the usual case), else None."""
        chunks = self._chunks
        return chunks[0] if len(chunks) == 1 else ("" if not chunks else None)

    def utf8_offset(self, index: int) -> int:
        """UTF-8 bytes before code point ``index`` (clamped to the text)."""
        ends = self._ends
        if index <= 0 or not ends:
            return 0
        if index >= ends[-1]:
            return self._byte_ends[-1]
        k = bisect_right(ends, index)
        start = ends[k - 1] if k else 0
        return (self._byte_ends[k - 1] if k else 0) + _utf8(self._chunks[k][: index - start])

    def utf8_length(self, start: int, stop: int) -> int:
        """UTF-8 bytes of code points ``start:stop`` (clamped)."""
        if len(self._chunks) == 1:  # the usual document: one slice, as a str would
            return _utf8(self._chunks[0][max(start, 0) : stop]) if start < stop else 0
        return max(self.utf8_offset(stop) - self.utf8_offset(start), 0)

    # -- changing -----------------------------------------------------------

    def apply(self, delta: Delta) -> PlainText:
        """This text after ``delta`` (formatting ignored); past the end is a ``ValueError``."""
        chunks = self._chunks
        if len(chunks) <= 1:  # the usual document
            return self._apply_small(chunks[0] if chunks else "", delta)
        sizes, ends = self._sizes, self._ends
        total = ends[-1]
        step = self.chunk
        out: list[str] = []
        out_sizes: list[int] = []
        pending: list[str] = []  # the text of the chunks being rebuilt
        at = 0  # code points of the old text used up

        def flush() -> None:
            """The rebuilt text as chunks of about equal size, none over ``step``."""
            if pending:
                text = "".join(pending)
                pending.clear()
                pieces = -(-len(text) // step)
                for i in range(pieces):
                    piece = text[len(text) * i // pieces : len(text) * (i + 1) // pieces]
                    out.append(piece)
                    out_sizes.append(_utf8(piece))

        def keep(count: int) -> None:
            """Keep ``count`` old code points from ``at``; untouched chunks by reference."""
            nonlocal at
            stop = at + count
            while at < stop:
                k = bisect_right(ends, at)
                offset = at - (ends[k - 1] if k else 0)
                if offset == 0 and ends[k] <= stop:
                    if pending and sum(map(len, pending)) < step // 2:
                        pending.append(chunks[k])  # a small rebuilt piece joins its neighbour
                        at = ends[k]
                        flush()
                        continue
                    flush()
                    last = bisect_right(ends, stop)  # chunks k..last-1 end by ``stop``
                    out.extend(chunks[k:last])
                    out_sizes.extend(sizes[k:last])
                    at = ends[last - 1]
                    continue
                end = min(ends[k], stop)
                pending.append(chunks[k][offset : offset + end - at])
                at = end

        for component in delta.ops:
            if type(component) is Insert:
                pending.append(component.text)
                continue
            count = component.count  # type: ignore[union-attr]
            if at + count > total:
                raise ValueError("delta reaches past the end of the text")
            if type(component) is Retain:
                keep(count)
            else:
                assert type(component) is Delete
                at += count
        keep(total - at)  # the implicit retain of the rest
        flush()
        made = type(self).__new__(type(self))
        made._set(out, out_sizes)
        if len(out) > 2 * (len(made) // step) + 8:
            return type(self)(str(made))  # left in pieces by many deletes: chunk afresh
        return made

    def _apply_small(self, old: str, delta: Delta) -> PlainText:
        """``apply`` for a text of one chunk: as on a ``str``."""
        i = 0
        length = len(old)
        pieces: list[str] = []
        for component in delta.ops:
            kind = type(component)
            if kind is Insert:
                pieces.append(component.text)  # type: ignore[union-attr]
                continue
            count = component.count  # type: ignore[union-attr]
            if i + count > length:
                raise ValueError("delta reaches past the end of the text")
            if kind is Retain:
                pieces.append(old[i : i + count])
            i += count
        pieces.append(old[i:])
        return type(self).of("".join(pieces))

    @classmethod
    def of(cls, text: str) -> PlainText:
        """``PlainText(text)``, quicker for a text of one chunk."""
        if len(text) > cls.chunk or not text:
            return cls(text)
        made = object.__new__(cls)
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
        made._chunks, made._sizes, made._ends, made._byte_ends = [text], [size], [len(text)], [size]
        return made

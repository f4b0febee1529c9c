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

__all__ = ["PlainText", "apply_to_text", "utf8_length"]


def utf8_length(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (free for ASCII: ``str.isascii`` is O(1))."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def apply_to_text(old: str, delta: Delta) -> str:
    """The plain text of ``old`` after ``delta`` (formatting ignored; no bounds checked)."""
    i = 0
    pieces: list[str] = []
    for component in delta.ops:
        if type(component) is Retain:
            pieces.append(old[i : i + component.count])
            i += component.count
        elif type(component) is Delete:
            i += component.count
        else:
            pieces.append(component.text)  # type: ignore[union-attr]
    pieces.append(old[i:])
    return "".join(pieces)


class PlainText:
    """Text as chunks, with running code point and UTF-8 byte totals per chunk."""

    __slots__ = ("_chunks", "_sizes", "_ends", "_byte_ends")

    #: Most code points in a chunk.
    chunk: ClassVar[int] = 16_384

    def __init__(self, text: str = "") -> None:
        step = self.chunk
        chunks = [text[i : i + step] for i in range(0, len(text), step)]
        self._set(chunks, [utf8_length(piece) for piece in chunks])

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

    def utf8_offset(self, index: int) -> int:
        """UTF-8 bytes before code point ``index`` (clamped to the text)."""
        ends = self._ends
        if index <= 0 or not ends:
            return 0
        if index >= ends[-1]:
            return self._byte_ends[-1]
        k = bisect_right(ends, index)
        start = ends[k - 1] if k else 0
        return (self._byte_ends[k - 1] if k else 0) + utf8_length(self._chunks[k][: index - start])

    def utf8_length(self, start: int, stop: int) -> int:
        """UTF-8 bytes of code points ``start:stop`` (clamped)."""
        if len(self._chunks) == 1:  # the usual document: one slice, as a str would
            return utf8_length(self._chunks[0][max(start, 0) : stop]) if start < stop else 0
        return max(self.utf8_offset(stop) - self.utf8_offset(start), 0)

    # -- changing -----------------------------------------------------------

    def apply(self, delta: Delta) -> PlainText:
        """This text after ``delta`` (formatting ignored); past the end is a ``ValueError``."""
        return self.measure(delta)[0]

    def measure(self, delta: Delta) -> tuple[PlainText, list[int]]:
        """``apply``, and the UTF-8 bytes of each retain and delete of ``delta``, in order."""
        chunks = self._chunks
        if len(chunks) <= 1:  # the usual document
            return self._measure_small(chunks[0] if chunks else "", delta)
        measured: list[int] = []
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
                    out_sizes.append(utf8_length(piece))

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
            measured.append(self.utf8_length(at, at + count))
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
            made = type(self)(str(made))  # left in pieces by many deletes: chunk afresh
        return made, measured

    def _measure_small(self, old: str, delta: Delta) -> tuple[PlainText, list[int]]:
        """``measure`` for a text of one chunk: on the ``str``, in one pass."""
        i = 0
        pieces: list[str] = []
        measured: list[int] = []
        for component in delta.ops:
            kind = type(component)
            if kind is Insert:
                pieces.append(component.text)  # type: ignore[union-attr]
                continue
            count = component.count  # type: ignore[union-attr]
            chunk = old[i : i + count]
            if len(chunk) != count:
                raise ValueError("delta reaches past the end of the text")
            measured.append(utf8_length(chunk))
            if kind is Retain:
                pieces.append(chunk)
            i += count
        pieces.append(old[i:])
        return type(self).of("".join(pieces)), measured

    @classmethod
    def of(cls, text: str) -> PlainText:
        """``PlainText(text)``, quicker for a text of one chunk."""
        if len(text) > cls.chunk or not text:
            return cls(text)
        made = object.__new__(cls)
        size = utf8_length(text)
        made._chunks, made._sizes, made._ends, made._byte_ends = [text], [size], [len(text)], [size]
        return made

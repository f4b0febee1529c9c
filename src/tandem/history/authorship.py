"""Who inserted each character of a document: pure, no I/O.

An ``Authorship`` keeps one user index per character (an ``array`` of
unsigned ints, so an insert or delete is one C-level splice) and follows the
document op by op: an insert's characters belong to the op's user, a delete
removes its characters' authors, a retain (with or without a format) changes
no one's. So text an undo brings back belongs to whoever undid, and a
format never changes who wrote something. ``spans()`` run-length encodes it
as ``[(user, length), …]`` in document order, lengths in code points.

Must not import asyncio, storage or the network.
"""

from __future__ import annotations

import re
import sys
from array import array
from collections.abc import Iterable, Sequence
from itertools import groupby
from typing import Any, Final

from tandem.errors import OperationTooLong
from tandem.ot.delta import Delete, Delta, Insert

__all__ = ["Authorship"]

#: Where the low byte of each array item sits in its bytes.
_LOW_BYTE: Final = 0 if sys.byteorder == "little" else array("I").itemsize - 1
#: A run of one repeated byte.
_RUNS: Final = re.compile(rb"(.)\1*", re.DOTALL)


class Authorship:
    """The author of every character of one document (see the module docstring)."""

    __slots__ = ("_index", "chars", "users")

    def __init__(self) -> None:
        #: User index → user id.
        self.users: list[str] = []
        self._index: dict[str, int] = {}
        #: One user index per character, in document order.
        self.chars = array("I")

    def __len__(self) -> int:
        return len(self.chars)

    def _id(self, user: str) -> int:
        index = self._index.get(user)
        if index is None:
            index = self._index[user] = len(self.users)
            self.users.append(user)
        return index

    def apply(self, op: Delta, user: str) -> None:
        """Follow ``op``, committed by ``user``; raises ``OperationTooLong`` if it does not fit."""
        if op.base_length() > len(self.chars):
            raise OperationTooLong(
                f"op reaches position {op.base_length()} but the document has {len(self.chars)}"
            )
        chars = self.chars
        position = 0
        author: array[int] | None = None
        for component in op.ops:
            length = len(component)
            kind = type(component)
            if kind is Insert:
                if author is None:
                    author = array("I", [self._id(user)])
                chars[position:position] = author * length
                position += length
            elif kind is Delete:
                del chars[position : position + length]
            else:
                position += length

    def spans(self) -> list[tuple[str, int]]:
        """``[(user, length), …]`` in document order, neighbours merged."""
        users = self.users
        if len(users) <= 256:
            # Runs found by the regex engine over one byte per character: a
            # Python step per run, not per character.
            data = self.chars.tobytes()[_LOW_BYTE :: self.chars.itemsize]
            return [(users[data[m.start()]], m.end() - m.start()) for m in _RUNS.finditer(data)]
        return [(users[key], sum(1 for _ in run)) for key, run in groupby(self.chars)]

    def to_json(self) -> list[dict[str, Any]]:
        """``[{"user": …, "length": …}, …]``, as the REST API returns it."""
        return [{"user": user, "length": length} for user, length in self.spans()]

    @classmethod
    def from_spans(cls, spans: Iterable[Sequence[Any]]) -> Authorship:
        """Rebuild from ``spans()`` (or its JSON pairs)."""
        authorship = cls()
        chars = authorship.chars
        for user, length in spans:
            chars.extend(array("I", [authorship._id(str(user))]) * int(length))
        return authorship

    def copy(self) -> Authorship:
        other = Authorship()
        other.users = list(self.users)
        other._index = dict(self._index)
        other.chars = array("I", self.chars)
        return other

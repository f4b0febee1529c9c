"""Document incarnations: which history a version belongs to.

A version names a point in *one* history. Deleting and recreating a document,
restoring it from a backup or importing it starts another history under the
same numbers, so every document carries an incarnation id, and versions are
only comparable within one incarnation (docs/protocol.md, "Incarnations").

A document has a row here once a node has opened it. A document without one
gets a new incarnation the next time a node opens it (``session/incarnation.py``),
so starting a new incarnation is deleting the row: ``DocumentAdmin.remove``
does it with the rest of the document, ``tandem backup`` in its copy,
``tandem import`` for what it imports, ``tandem docs renew`` after a restore
with other tools.

``IncarnationStore`` is the contract (``tests/contract/test_incarnations.py``):
``create`` inserts a row only if the document has none and returns the row
that is there (the first of several nodes to create one wins); ``renew``
deletes the rows of the documents matching a glob.

Also carries, per incarnation, what the Yjs side needs to tell the histories
apart: the Yjs client id the server's replica writes with (``yjs_client``), the
version at which it was seeded from the text (``yjs_from``), and the client ids
of the replica it replaced (``retired``). No I/O here but the memory store.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Protocol

__all__ = [
    "LEGACY",
    "Incarnation",
    "IncarnationStore",
    "MemoryIncarnations",
    "new_incarnation",
]

#: The first Yjs client id a new incarnation's replica may write with: the
#: upper half of uint32, above the ids the server gives bridged OT clients.
_YJS_CLIENT_FLOOR = 1 << 31


@dataclass(frozen=True, slots=True)
class Incarnation:
    """One history of a document."""

    #: 32 hex digits; "" for a store that keeps no incarnations (an embedder's own).
    id: str
    #: The Yjs client id of the server's replica in this incarnation.
    yjs_client: int = 1
    #: The version at which the replica was seeded from the text (0: the stored state).
    yjs_from: int = 0
    #: Yjs client ids of the replica this one replaced (the old history's items).
    retired: frozenset[int] = field(default_factory=frozenset)

    def retired_text(self) -> str:
        return " ".join(str(client) for client in sorted(self.retired))

    @staticmethod
    def parse_retired(text: str) -> frozenset[int]:
        return frozenset(int(part) for part in text.split())


#: Documents of a store without incarnations: one history, as before they existed.
LEGACY = Incarnation("")


def new_incarnation(yjs_from: int, retired: frozenset[int]) -> Incarnation:
    """A fresh incarnation whose replica is seeded at ``yjs_from`` by a new Yjs client id."""
    client = _YJS_CLIENT_FLOOR + secrets.randbelow(_YJS_CLIENT_FLOOR)
    while client in retired:
        client = _YJS_CLIENT_FLOOR + secrets.randbelow(_YJS_CLIENT_FLOOR)
    return Incarnation(secrets.token_hex(16), client, yjs_from, retired)


class IncarnationStore(Protocol):
    async def get(self, doc: str) -> Incarnation | None: ...

    async def create(self, doc: str, incarnation: Incarnation) -> Incarnation: ...

    async def renew(self, pattern: str = "*") -> int: ...


class MemoryIncarnations:
    def __init__(self) -> None:
        self.rows: dict[str, Incarnation] = {}

    async def get(self, doc: str) -> Incarnation | None:
        return self.rows.get(doc)

    async def create(self, doc: str, incarnation: Incarnation) -> Incarnation:
        return self.rows.setdefault(doc, incarnation)

    async def renew(self, pattern: str = "*") -> int:
        matching = [doc for doc in self.rows if fnmatchcase(doc, pattern)]
        for doc in matching:
            del self.rows[doc]
        return len(matching)

"""The one record of a committed op, shared by the sequencer, the stores, the bus and catch-up.

An ``OpRecord`` is made once, when the sequencer decides an op (or a Yjs update,
or another node's op, arrives), and the same object travels the whole path:
the sequencer's history window, the group commit, the store, the bus and a
joining client's catch-up. Each edge converts it in exactly one place:

* the wire: ``tandem.protocol`` (``op_message``, ``catchup_message``);
* storage rows: each store's ``_records`` / row reader (``tandem.storage``);
* bus payloads: ``tandem.session.payloads``.

Nobody changes a record once made: ``with_crdt`` makes a new one. That is
checked by mypy (``make lint``), which sees ``value_record`` classes as frozen
dataclasses, not at run time: a ``frozen`` dataclass sets every field through
``object.__setattr__``, which made building a record cost ~2.3 µs against
~0.45 µs for a plain slotted one — a fifth of the sequencer's time per op
(docs/performance.md, "The OT core against Yjs").

Pure: no I/O, no asyncio; imports only the OT value types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from tandem.ot.delta import Delta

__all__ = ["OpRecord", "public_client", "value_record"]

_T = TypeVar("_T")

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform

    @dataclass_transform(frozen_default=True)
    def value_record(cls: type[_T]) -> type[_T]:
        """A slotted dataclass that the type checker treats as frozen."""

else:

    def value_record(cls):
        """A slotted dataclass that the type checker treats as frozen."""
        return dataclass(slots=True)(cls)


@value_record
class OpRecord:
    """One committed op: what version ``version`` of document ``doc`` changed, and who."""

    doc: str
    #: The version this op produced (the first op of a document is version 1).
    version: int
    op: Delta
    #: Idempotency identity of the submitting client: ``client@user`` (see docs/protocol.md).
    client_id: str
    #: The client's sequence number, or None for ops without one (REST, Yjs bridge).
    seq: int | None
    user: str
    #: Commit time, seconds since the epoch.
    time: float
    #: The Yjs update the op made on the CRDT replica (for a Yjs client's op: the
    #: effective update it merged); None when the op was committed without one.
    crdt: bytes | None = None

    def with_crdt(self, crdt: bytes | None) -> OpRecord:
        """This record carrying ``crdt`` (half the cost of ``dataclasses.replace``)."""
        return OpRecord(
            self.doc, self.version, self.op, self.client_id, self.seq, self.user, self.time, crdt
        )


def public_client(key: str) -> str:
    """The client id a ``client@user`` idempotency key shows on the wire."""
    return key.split("@", 1)[0]

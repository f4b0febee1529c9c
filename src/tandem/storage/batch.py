"""The pure half of ``append``: is this batch well formed, and does it continue the log?

A backend asks ``plan_batch`` to group a batch by document and check what can
be checked without storage (versions consecutive in the batch, no
``(client_id, seq)`` used twice in it), then reads each document's head under
its write lock and asks ``check_heads`` whether the batch continues every log
exactly. Both raise ``ConflictError`` and nothing has been written yet, so
every backend rejects exactly the same batches with the same messages.

Pure: no asyncio, no storage drivers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from tandem.errors import ConflictError
from tandem.storage.base import OpRecord

__all__ = ["DocumentRun", "check_heads", "duplicate_seq", "plan_batch"]


class DocumentRun(NamedTuple):
    """One document's records in a batch: versions ``first..last``, consecutive.

    A named tuple, not a frozen dataclass: one is made per document per commit,
    and a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``.
    """

    doc: str
    first: int
    last: int
    #: Commit time of the last record: the document's new ``updated``.
    updated: float
    records: tuple[OpRecord, ...]

    @property
    def expected_head(self) -> int:
        """The head the document must have for this run to continue its log."""
        return self.first - 1


def plan_batch(records: Sequence[OpRecord]) -> list[DocumentRun]:
    """Group ``records`` by document, sorted by document id (the lock order).

    Raises ``ConflictError`` if a document's versions are not consecutive in
    batch order, or if a ``(doc, client_id, seq)`` appears twice.
    """
    if len(records) == 1:  # an op alone in its commit, the usual case below saturation
        record = records[0]
        return [DocumentRun(record.doc, record.version, record.version, record.time, (record,))]
    by_doc: dict[str, list[OpRecord]] = {}
    seen: set[tuple[str, str, int]] = set()
    for record in records:
        run = by_doc.setdefault(record.doc, [])
        if run and record.version != run[-1].version + 1:
            raise ConflictError(
                f"document {record.doc!r}: version {record.version} follows "
                f"{run[-1].version} in the batch; versions must be consecutive"
            )
        if record.seq is not None:
            key = (record.doc, record.client_id, record.seq)
            if key in seen:
                raise ConflictError(
                    f"document {record.doc!r}: client {record.client_id!r} seq {record.seq} "
                    "appears twice in the batch"
                )
            seen.add(key)
        run.append(record)
    return [
        DocumentRun(doc, run[0].version, run[-1].version, run[-1].time, tuple(run))
        for doc, run in sorted(by_doc.items())
    ]


def check_heads(runs: Sequence[DocumentRun], heads: Mapping[str, int]) -> None:
    """Raise ``ConflictError`` unless every run starts right after its document's head.

    ``heads`` maps document ids to their committed head; a missing id means 0.
    """
    for run in runs:
        head = heads.get(run.doc, 0)
        if run.first != head + 1:
            raise ConflictError(
                f"document {run.doc!r}: batch starts at version {run.first} "
                f"but the head is {head} (expected {head + 1})"
            )


def duplicate_seq(doc: str, client_id: str, seq: int | None) -> ConflictError:
    """The error for a ``(client_id, seq)`` already committed in ``doc``."""
    return ConflictError(f"document {doc!r}: client {client_id!r} seq {seq} was already committed")

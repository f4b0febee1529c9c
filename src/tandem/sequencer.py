"""The single sequencer of one document: pure decisions, no I/O.

Given ``(client, seq, base_version, op)`` the sequencer decides one of:

* **duplicate** — ``(client, seq)`` was already committed at version ``v``:
  acknowledge again with ``v`` and apply nothing (idempotent resubmits);
* **no-op** — the op, transformed to the head, changes nothing: acknowledge
  at the current head without creating a version;
* **commit** — transform the op against every op committed since
  ``base_version``, *one at a time, in commit order* (transform does not
  commute with compose for rich text), apply it, and make it the next version.

Concurrent inserts at the same position are ordered by commit order: the
incoming op is transformed with side ``"right"``, so what was committed first
stays first. Clients transform incoming server ops against their pending ops
with side ``"left"`` — the same diamond, seen from the other corner.

The sequencer keeps a window of recent history in memory. A base version older
than the window raises ``HistoryUnavailable`` with ``needed_from`` set; the
async session then loads the missing ops from storage, calls
``extend_history`` and retries. The caller persists ``Commit`` entries before
it acknowledges or broadcasts them; if persisting fails it must discard this
sequencer and reload from storage.

Must not import asyncio, storage, bus or network code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from tandem.errors import DocumentTooLarge, HistoryUnavailable, VersionError
from tandem.ot.delta import Delta
from tandem.ot.document import Document
from tandem.ot.transform import transform
from tandem.records import OpRecord, value_record

__all__ = ["Commit", "Duplicate", "HistoryGap", "NoOp", "Sequencer"]

#: Ops kept in memory for transforming late submits; older ones come from storage.
DEFAULT_WINDOW: Final = 10_000  # Settings.history_window


@value_record  # built once per committed op: a frozen dataclass costs 3x as much
class Commit:
    """Decision: ``entry`` becomes the next version; ``document`` is the new head content."""

    entry: OpRecord
    document: Document


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Decision: this ``(client, seq)`` was already committed at ``version``."""

    version: int


@dataclass(frozen=True, slots=True)
class NoOp:
    """Decision: nothing to commit; acknowledge at head ``version``."""

    version: int


class HistoryGap(HistoryUnavailable):
    """The window does not reach back to the base version; load ``needed_from`` onwards."""

    def __init__(self, needed_from: int, window_start: int) -> None:
        super().__init__(
            f"history before version {window_start} is not in memory (need from {needed_from})"
        )
        self.needed_from = needed_from
        self.window_start = window_start


class Sequencer:
    """History window, idempotency table and transform-to-head for one document."""

    def __init__(
        self,
        doc: str,
        document: Document,
        version: int,
        history: Iterable[OpRecord] = (),
        *,
        window: int = DEFAULT_WINDOW,
        max_document_chars: int = 0,
        max_version_lag: int = 0,
    ) -> None:
        self.doc = doc
        self.document = document
        self.version = version
        self._window = max(window, 1)
        self._max_chars = max_document_chars
        self._max_lag = max_version_lag
        self._entries: list[OpRecord] = list(history)
        if self._entries and self._entries[-1].version != version:
            raise ValueError("history must end at the current version")
        self._seqs: dict[tuple[str, int], int] = {}
        for entry in self._entries:
            if entry.seq is not None:
                self._seqs[(entry.client_id, entry.seq)] = entry.version

    # -- history ------------------------------------------------------------

    @property
    def window_start(self) -> int:
        """The oldest base version the window can transform from."""
        return self._entries[0].version - 1 if self._entries else self.version

    def entries_since(self, version: int) -> list[OpRecord]:
        """Committed entries after ``version`` (raises HistoryGap if not all in memory)."""
        if version < self.window_start:
            raise HistoryGap(version, self.window_start)
        return self._entries[version - self.window_start :]

    def stamp_head(self, crdt: bytes) -> OpRecord:
        """Attach the CRDT update the replica made for the newest entry; returns the entry."""
        entry = self._entries[-1].with_crdt(crdt)
        self._entries[-1] = entry
        return entry

    def forget_crdt(self, version: int) -> None:
        """Drop the CRDT update kept with the entry of ``version`` (it is stored)."""
        index = version - self.window_start - 1
        if 0 <= index < len(self._entries) and self._entries[index].crdt is not None:
            self._entries[index] = self._entries[index].with_crdt(None)

    def extend_history(self, older: Sequence[OpRecord]) -> None:
        """Prepend entries loaded from storage that end right before the window."""
        if not older:
            return
        if older[-1].version != self.window_start:
            raise ValueError("older history must end where the window starts")
        self._entries[:0] = older
        for entry in older:
            if entry.seq is not None:
                self._seqs[(entry.client_id, entry.seq)] = entry.version

    def find_seq(self, client_id: str, seq: int) -> int | None:
        """The version of an already committed ``(client_id, seq)`` known in memory."""
        return self._seqs.get((client_id, seq))

    # -- deciding -------------------------------------------------------------

    def submit(
        self,
        op: Delta,
        base_version: int,
        *,
        client_id: str,
        seq: int | None,
        user: str,
        now: float,
    ) -> Commit | Duplicate | NoOp:
        """Decide what to do with one submitted op; on Commit the state has advanced."""
        if seq is not None:
            known = self._seqs.get((client_id, seq))
            if known is not None:
                return Duplicate(known)
        if base_version < 0 or base_version > self.version:
            raise VersionError(
                f"base version {base_version} is not between 0 and the head version {self.version}"
            )
        if self._max_lag and self.version - base_version > self._max_lag:
            raise HistoryUnavailable(
                f"base version {base_version} is more than {self._max_lag} versions behind "
                f"the head ({self.version}); re-join the document"
            )
        for entry in self.entries_since(base_version):
            op = transform(op, entry.op, "right")
        if not op.ops:
            return NoOp(self.version)
        document = self.document.apply(op)
        if (
            self._max_chars
            and len(document) > self._max_chars
            and len(document) > len(self.document)
        ):
            raise DocumentTooLarge(
                f"the document would have {len(document)} characters; "
                f"the limit is {self._max_chars}"
            )
        entry = OpRecord(self.doc, self.version + 1, op, client_id, seq, user, now)
        self._advance(entry, document)
        return Commit(entry, document)

    def apply_committed(self, entry: OpRecord) -> Document:
        """Advance by an op committed elsewhere (another node); it must be the next version."""
        if entry.version != self.version + 1:
            raise ValueError(f"expected version {self.version + 1}, got {entry.version}")
        document = self.document.apply(entry.op)
        self._advance(entry, document)
        return document

    def withdraw(self, version: int, previous: Document) -> None:
        """Forget the head entry ``version``, never stored: the head is ``previous`` again.

        For an op held back from the store while the ``authorize`` hook decided,
        and then rejected. ``previous`` is the document before it.
        """
        if version != self.version or not self._entries or self._entries[-1].version != version:
            raise ValueError(f"only the head ({self.version}) can be withdrawn, not {version}")
        entry = self._entries.pop()
        if entry.seq is not None:
            self._seqs.pop((entry.client_id, entry.seq), None)
        self.version = version - 1
        self.document = previous

    def _advance(self, entry: OpRecord, document: Document) -> None:
        self.version = entry.version
        self.document = document
        self._entries.append(entry)
        if entry.seq is not None:
            self._seqs[(entry.client_id, entry.seq)] = entry.version
        overflow = len(self._entries) - self._window
        if overflow > self._window // 4:
            # Trim in steps so the list shift is amortised.
            for old in self._entries[:overflow]:
                if old.seq is not None:
                    self._seqs.pop((old.client_id, old.seq), None)
            del self._entries[:overflow]

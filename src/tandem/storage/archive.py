"""The history archive contract, and its in-memory reference implementation.

What ``tandem.history`` keeps beside a store's op log (migration ``history``):

* checkpoints: a document's content and authorship at a version, written every
  ``history_checkpoint_every`` versions as history is read, and at every cut;
* labels: named versions;
* the compaction mark: the oldest version retention kept.

It also reads the store's own snapshots (the session writes one every
``snapshot_every`` versions) and cuts the log: ``compact`` deletes the ops up
to a version that has a store snapshot (so the session still loads from it,
its CRDT state included) and a checkpoint (so authorship still adds up).

Rules every backend keeps (``tests/contract/test_archive.py``):

* ``checkpoint_at`` / ``snapshot_at`` / ``content_at`` / ``authorship_at`` return the newest one at
  or below the version asked for, or None.
* ``compact(doc, oldest)`` is atomic: the ops ``<= oldest`` and the snapshots
  and checkpoints ``< oldest`` go, and ``oldest(doc)`` becomes ``oldest``; it
  never moves back. The memory store keeps its ops (its log is a list), but
  ``oldest`` moves all the same and reads below it are refused above this layer.
* What the writes wrote is durable when they return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tandem.ot.delta import Delta
from tandem.storage.codec import decode_delta
from tandem.storage.memory import MemoryStore

__all__ = ["Archive", "Checkpoint", "Label", "MemoryArchive"]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A document's content and authorship at ``version``."""

    doc: str
    version: int
    content: Delta
    #: ``(user, length)`` runs in document order (``Authorship.spans()``).
    authors: Sequence[tuple[str, int]]


@dataclass(frozen=True, slots=True)
class Label:
    """A named version."""

    doc: str
    name: str
    version: int
    user: str
    time: float


class Archive(Protocol):
    """Checkpoints, labels and the compaction mark of every document (see the module rules)."""

    async def checkpoint_at(self, doc: str, version: int) -> Checkpoint | None:
        """The newest checkpoint at or below ``version``."""

    async def snapshot_at(self, doc: str, version: int) -> tuple[int, Delta] | None:
        """The newest store snapshot at or below ``version``: its version and content."""

    async def authorship_at(
        self, doc: str, version: int
    ) -> tuple[int, Sequence[tuple[str, int]]] | None:
        """The newest checkpoint's version and authorship at or below ``version`` (no content)."""

    async def content_at(self, doc: str, version: int) -> tuple[int, Delta] | None:
        """The newest stored content at or below ``version``: a snapshot's or a checkpoint's."""

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` (replacing one at the same version)."""

    async def oldest(self, doc: str) -> int:
        """The oldest version that can be read (0 unless compacted)."""

    async def last_before(self, doc: str, time: float) -> int:
        """The highest version whose op was committed before ``time`` (0 if none)."""

    async def compact(self, doc: str, oldest: int) -> None:
        """Cut the log at ``oldest`` (atomic; see the module rules)."""

    async def set_label(self, label: Label) -> None:
        """Name a version (replacing a label of the same name)."""

    async def labels(self, doc: str) -> list[Label]:
        """Every label of ``doc``, by version then name."""

    async def delete_label(self, doc: str, name: str) -> bool:
        """Remove a label; False if there was none."""


class MemoryArchive:
    """The archive of a ``MemoryStore``; nothing survives the process."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._checkpoints: dict[str, dict[int, Checkpoint]] = {}
        self._labels: dict[str, dict[str, Label]] = {}
        self._oldest: dict[str, int] = {}

    async def checkpoint_at(self, doc: str, version: int) -> Checkpoint | None:
        found = [v for v in self._checkpoints.get(doc, {}) if v <= version]
        return self._checkpoints[doc][max(found)] if found else None

    async def snapshot_at(self, doc: str, version: int) -> tuple[int, Delta] | None:
        state = self._store._documents.get(doc)
        found = [v for v in state.snapshots if v <= version] if state is not None else []
        if not found:
            return None
        newest = max(found)
        return newest, decode_delta(state.snapshots[newest].content)  # type: ignore[union-attr]

    async def authorship_at(
        self, doc: str, version: int
    ) -> tuple[int, Sequence[tuple[str, int]]] | None:
        checkpoint = await self.checkpoint_at(doc, version)
        return None if checkpoint is None else (checkpoint.version, checkpoint.authors)

    async def content_at(self, doc: str, version: int) -> tuple[int, Delta] | None:
        snapshot = await self.snapshot_at(doc, version)
        checkpoint = await self.checkpoint_at(doc, version)
        if checkpoint is not None and (snapshot is None or checkpoint.version >= snapshot[0]):
            return checkpoint.version, checkpoint.content
        return snapshot

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        self._checkpoints.setdefault(checkpoint.doc, {})[checkpoint.version] = checkpoint

    async def oldest(self, doc: str) -> int:
        return self._oldest.get(doc, 0)

    async def last_before(self, doc: str, time: float) -> int:
        state = self._store._documents.get(doc)
        last = 0
        for stored in state.ops if state is not None else ():
            if stored.time >= time:
                break
            last = stored.version
        return last

    async def compact(self, doc: str, oldest: int) -> None:
        if oldest <= self._oldest.get(doc, 0):
            return
        state = self._store._documents.get(doc)
        if state is not None:
            for version in [v for v in state.snapshots if v < oldest]:
                del state.snapshots[version]
        checkpoints = self._checkpoints.get(doc, {})
        for version in [v for v in checkpoints if v < oldest]:
            del checkpoints[version]
        self._oldest[doc] = oldest

    async def set_label(self, label: Label) -> None:
        self._labels.setdefault(label.doc, {})[label.name] = label

    async def labels(self, doc: str) -> list[Label]:
        return sorted(self._labels.get(doc, {}).values(), key=lambda x: (x.version, x.name))

    async def delete_label(self, doc: str, name: str) -> bool:
        return self._labels.get(doc, {}).pop(name, None) is not None

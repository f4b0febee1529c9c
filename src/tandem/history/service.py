"""Reading a document's past: versions, changes, authorship, labels, and retention.

``History`` answers from the store's op log, the store's snapshots and the
archive's checkpoints (``tandem.storage.archive``), never from a live
session, so it gives the same answer on every node and after a restart.

Costs (docs/protocol.md, "History"):

* a version: the newest snapshot or checkpoint at or below it, then the ops
  after that (at most ``snapshot_every`` of them, 100 by default);
* authorship at a version: the newest checkpoint at or below it, then the ops
  after it (each a splice of an array of user ids). Reading history writes a
  checkpoint every ``checkpoint_every`` (1,000) versions it replays, so the
  first authorship read of an old document walks its log once (from version
  0, or from the last cut), and any later one replays at most
  ``checkpoint_every`` ops;
* changes between two versions: the ops in between, composed (at most
  ``max_changes`` versions per request).

Compaction (``compact``) cuts the log at the newest store snapshot at or below
the retention point, after saving a checkpoint there: the session still loads
from that snapshot (with its CRDT state), and authorship still adds up.
Reading below the cut raises ``HistoryCompacted`` naming the oldest readable
version.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from tandem.errors import HistoryCompacted, HistoryUnavailable, NotFound, VersionError
from tandem.history.authorship import Authorship
from tandem.ot.compose import compose_pairwise
from tandem.ot.delta import Delta
from tandem.ot.document import Document
from tandem.storage.archive import Archive, Checkpoint, Label
from tandem.storage.base import OpRecord, Store

__all__ = ["Changes", "History", "compose_all"]

#: Ops read from the store at a time while replaying.
PAGE = 2000
#: Longest label name, in characters.
MAX_LABEL = 200


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed from ``from_version`` to ``to_version``: one composed delta, and who."""

    from_version: int
    to_version: int
    delta: Delta
    #: Users who committed the ops in between, in the order they first did.
    users: list[str]


def compose_all(ops: list[Delta]) -> Delta:
    """``ops`` composed into one, pairwise (``ot.compose.compose_pairwise``)."""
    return compose_pairwise(ops)


class History:
    """Versions, authorship, changes, labels and compaction of the documents in a store."""

    def __init__(
        self,
        store: Store,
        archive: Archive,
        *,
        checkpoint_every: int = 1000,
        max_changes: int = 10_000,
    ) -> None:
        self.store = store
        self.archive = archive
        self.checkpoint_every = checkpoint_every
        self.max_changes = max_changes

    # -- reading ------------------------------------------------------------------

    async def head(self, doc: str) -> int:
        return await self.store.head(doc)

    async def check(self, doc: str, version: int) -> int:
        """Raise unless ``version`` can be read; returns the head."""
        head = await self.store.head(doc)
        if version < 0 or version > head:
            raise VersionError(f"{doc!r} has versions 0 to {head}; there is no version {version}")
        oldest = await self.archive.oldest(doc)
        if version < oldest:
            raise HistoryCompacted(
                f"version {version} of {doc!r} was compacted away by retention; "
                f"the oldest version that can be read is {oldest}",
                oldest=oldest,
            )
        return head

    async def document_at(self, doc: str, version: int) -> Document:
        """The document as it was at ``version``."""
        await self.check(doc, version)
        stored = await self.archive.content_at(doc, version)
        base, document = (0, Document()) if stored is None else (stored[0], Document(stored[1]))
        # The ops composed first (small), then applied once to the (long) document.
        ops = [record.op async for record in self._ops(doc, base, version)]
        return document.apply(compose_all(ops)) if ops else document

    async def authors_at(self, doc: str, version: int) -> Authorship:
        """Who inserted each character of the document at ``version``."""
        await self.check(doc, version)
        return await self._replay(doc, version)

    async def changes(self, doc: str, from_version: int, to_version: int) -> Changes:
        """The ops after ``from_version`` up to ``to_version``, composed, and their users."""
        if to_version < from_version:
            raise VersionError(f"'from' ({from_version}) is after 'to' ({to_version})")
        if to_version - from_version > self.max_changes:
            raise VersionError(
                f"ask for at most {self.max_changes} versions at a time "
                f"(asked for {to_version - from_version})"
            )
        await self.check(doc, from_version)
        await self.check(doc, to_version)
        ops: list[Delta] = []
        users: dict[str, None] = {}
        async for record in self._ops(doc, from_version, to_version):
            ops.append(record.op)
            users.setdefault(record.user)
        return Changes(from_version, to_version, compose_all(ops), list(users))

    # -- labels -------------------------------------------------------------------

    async def set_label(self, doc: str, name: str, version: int, user: str, now: float) -> Label:
        """Name ``version`` (replacing a label of that name)."""
        name = name.strip()
        if not name or len(name) > MAX_LABEL:
            raise VersionError(f"a label is 1 to {MAX_LABEL} characters")
        await self.check(doc, version)
        label = Label(doc, name, version, user, now)
        await self.archive.set_label(label)
        return label

    async def labels(self, doc: str) -> list[Label]:
        return await self.archive.labels(doc)

    async def label(self, doc: str, name: str) -> Label:
        for label in await self.archive.labels(doc):
            if label.name == name:
                return label
        raise NotFound(f"{doc!r} has no label {name!r}")

    async def delete_label(self, doc: str, name: str) -> None:
        if not await self.archive.delete_label(doc, name):
            raise NotFound(f"{doc!r} has no label {name!r}")

    # -- retention ------------------------------------------------------------------

    async def compact(
        self,
        doc: str,
        *,
        keep_versions: int | None = None,
        keep_days: float | None = None,
        now: float = 0.0,
    ) -> int | None:
        """Cut ops older than ``keep_versions`` versions or ``keep_days`` days.

        Returns the new oldest readable version, or None when nothing was cut
        (nothing old enough, or no store snapshot to cut at yet).
        """
        head = await self.store.head(doc)
        oldest = await self.archive.oldest(doc)
        cut = 0
        if keep_versions is not None:
            cut = max(cut, head - keep_versions)
        if keep_days is not None:
            cut = max(cut, await self.archive.last_before(doc, now - keep_days * 86_400))
        cut = min(cut, head - 1)  # the head op stays: it is how the store knows the head
        if cut <= oldest:
            return None
        snapshot = await self.archive.snapshot_at(doc, cut)
        if snapshot is None or snapshot[0] <= oldest:
            return None
        cut = snapshot[0]
        authorship = await self._replay(doc, cut)
        document = await self.document_at(doc, cut)
        await self.archive.save_checkpoint(
            Checkpoint(doc, cut, document.to_delta(), authorship.spans())
        )
        await self.archive.compact(doc, cut)
        return cut

    async def compact_all(
        self, *, keep_versions: int | None, keep_days: float | None, now: float
    ) -> dict[str, int]:
        """``compact`` every document; returns the ones cut and their new oldest version."""
        cut: dict[str, int] = {}
        for info in await self.store.list_documents():
            oldest = await self.compact(
                info.doc, keep_versions=keep_versions, keep_days=keep_days, now=now
            )
            if oldest is not None:
                cut[info.doc] = oldest
        return cut

    # -- inside -------------------------------------------------------------------

    async def _replay(self, doc: str, version: int) -> Authorship:
        """Authorship at ``version``: the newest checkpoint, then the ops after it.

        A replay of ``checkpoint_every`` versions or more saves a checkpoint at
        each multiple of it on the way (its content read as ``document_at`` does).
        """
        checkpoint = await self.archive.authorship_at(doc, version)
        if checkpoint is not None:
            base, authorship = checkpoint[0], Authorship.from_spans(checkpoint[1])
        else:
            base, authorship = 0, Authorship()
        every = self.checkpoint_every
        async for record in self._ops(doc, base, version):
            authorship.apply(record.op, record.user)
            if record.version % every == 0 and version - base >= every:
                content = await self.document_at(doc, record.version)
                await self.archive.save_checkpoint(
                    Checkpoint(doc, record.version, content.to_delta(), authorship.spans())
                )
        return authorship

    async def _ops(self, doc: str, after: int, upto: int) -> AsyncIterator[OpRecord]:
        """The ops ``after < v <= upto`` in pages; raises if the log has a hole."""
        expected = after + 1
        while expected <= upto:
            page = await self.store.get_ops(doc, expected - 1, min(upto, expected - 1 + PAGE))
            if not page or page[0].version != expected:
                raise HistoryUnavailable(
                    f"the log of {doc!r} from version {expected} is not available"
                )
            for record in page:
                yield record
            expected = page[-1].version + 1

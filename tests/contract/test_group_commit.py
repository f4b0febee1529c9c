"""The group committer on every store: many documents' ops, reported in each one's order.

``GroupCommitter`` writes whatever is queued, of every document, in one
commit at a time. This drives it against the real stores with sessions that
record what they are told.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from tandem.metrics import Metrics
from tandem.ot import Delta
from tandem.records import OpRecord
from tandem.session.commit import GroupCommitter
from tandem.settings import Settings
from tandem.storage import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def op(doc: str, version: int, text: str) -> OpRecord:
    return OpRecord(doc, version, Delta().insert(text), "c1", version, "ann", 1000.0 + version)


@dataclass
class Recorder:
    """A document session's side of ``Committing``: what it was told, in order."""

    committed_versions: list[int] = field(default_factory=list)
    synced_versions: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def committed(self, version: int, synced: bool) -> None:
        self.committed_versions.append(version)
        if synced:
            self.synced_versions.append(version)

    def synced(self, version: int) -> None:
        self.synced_versions.append(version)

    def sync_failed(self, exc: BaseException) -> None:
        self.failures.append(f"sync_failed: {exc}")

    def conflict(self) -> None:
        self.failures.append("conflict")

    def commit_failed(self, exc: BaseException) -> None:
        self.failures.append(f"commit_failed: {exc}")

    def fenced(self) -> None:
        self.failures.append("fenced")


def committer(store: Store) -> GroupCommitter:
    group = GroupCommitter(store, Metrics("t"), Settings())
    group.start()
    return group


async def test_every_documents_ops_are_committed_and_reported_in_order(store: Store) -> None:
    group = committer(store)
    docs = [f"d{i}" for i in range(12)]
    sessions = {doc: Recorder() for doc in docs}
    try:
        for version in range(1, 9):
            for doc in docs:
                group.enqueue(sessions[doc], op(doc, version, f"{doc}.{version}"))
                if version % 3 == 0:
                    await asyncio.sleep(0)  # let commits start between enqueues
        await group.drain()
    finally:
        await group.close()
    for doc, session in sessions.items():
        assert session.failures == []
        assert session.committed_versions == sorted(set(session.committed_versions))
        assert session.committed_versions[-1] == 8
        assert session.synced_versions[-1] == 8
        assert [r.version for r in await store.get_ops(doc, 0)] == list(range(1, 9))

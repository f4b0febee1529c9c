"""The history archive (``tandem/storage/archive.py``) and ``tandem.history``, against every store.

The oracle: over seeded random histories (several users editing at stale
versions, transformed as the server does, formats, and undos of their own
edits), a document at any version equals replaying the log from version 0,
and its authorship equals replaying the log with a user tag on every
character, across snapshots, checkpoints, compaction and a restart (a
second store object over the same storage).

Replay one history with ``TANDEM_SIM_SEED=<seed>``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest
from tests.property.seeds import with_fresh_seeds

from tandem.client.undo import UndoManager
from tandem.errors import HistoryCompacted, NotFound, VersionError
from tandem.history.service import History
from tandem.ot import Delta, Document, apply, transform
from tandem.storage import Checkpoint, Label, OpRecord, Snapshot, Store, open_archive

pytestmark = pytest.mark.anyio

MakeStore = Callable[[], Store]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def record(doc: str, version: int, op: Delta, user: str, time: float = 0.0) -> OpRecord:
    return OpRecord(doc, version, op, f"{user}-client", None, user, time)


async def test_checkpoints_snapshots_labels_and_the_cut(make_store: MakeStore) -> None:
    store = make_store()
    await store.open()
    archive = open_archive(store)
    await store.append([record("d", v, Delta().insert("x"), "ann", 10.0 * v) for v in (1, 2, 3)])
    await store.save_snapshot(Snapshot("d", 2, Delta().insert("xx")))
    assert await archive.snapshot_at("d", 1) is None
    assert await archive.snapshot_at("d", 3) == (2, Delta().insert("xx"))
    await archive.save_checkpoint(Checkpoint("d", 1, Delta().insert("x"), [("ann", 1)]))
    found = await archive.checkpoint_at("d", 5)
    assert found is not None and found.version == 1 and list(found.authors) == [("ann", 1)]
    assert await archive.checkpoint_at("d", 0) is None
    assert await archive.last_before("d", 25.0) == 2
    assert await archive.last_before("nothing", 25.0) == 0
    await archive.set_label(Label("d", "draft", 1, "ann", 5.0))
    await archive.set_label(Label("d", "draft", 2, "bob", 6.0))  # replaces
    await archive.set_label(Label("d", "final", 3, "ann", 7.0))
    assert [(x.name, x.version, x.user) for x in await archive.labels("d")] == [
        ("draft", 2, "bob"),
        ("final", 3, "ann"),
    ]
    assert await archive.delete_label("d", "final")
    assert not await archive.delete_label("d", "final")
    assert await archive.oldest("d") == 0
    await archive.compact("d", 2)
    await archive.compact("d", 1)  # never moves back
    # a restarted process sees all of it
    reopened = make_store()
    await reopened.open()
    again = open_archive(reopened)
    assert await again.oldest("d") == 2
    assert await again.checkpoint_at("d", 5) is None  # the checkpoint below the cut went
    assert [x.name for x in await again.labels("d")] == ["draft"]
    assert await store.head("d") == 3


# -- the oracle -------------------------------------------------------------------

USERS = ("ann", "bob", "cy")


def random_history(seed: int, length: int) -> list[tuple[Delta, str]]:
    """A committed log: users edit at stale versions (transformed to the head) and undo."""
    rng = random.Random(seed)
    committed: list[tuple[Delta, str]] = []
    documents = [Document()]
    undo = {user: UndoManager() for user in USERS}
    for _ in range(length):
        user = rng.choice(USERS)
        head = documents[-1]
        if rng.random() < 0.15 and undo[user].can_undo:
            step = undo[user].undo(head)
            assert step is not None
            op = step.delta
        else:
            base_version = max(0, len(committed) - rng.randint(0, 4))
            base = documents[base_version]
            n = len(base)
            roll = rng.random()
            pos = rng.randint(0, n)
            if roll < 0.55 or n == 0:
                text = "".join(rng.choice("abcdé😀 ") for _ in range(rng.randint(1, 5)))
                op = (
                    Delta().retain(pos).insert(text, {"bold": True} if rng.random() < 0.2 else None)
                )
            elif roll < 0.85:
                op = Delta().retain(min(pos, n - 1)).delete(rng.randint(1, 3))
            else:
                op = Delta().retain(min(pos, n - 1)).retain(2, {"italic": True})
            if op.base_length() > n:
                op = Delta().retain(n).insert("z")
            for committed_op, _ in committed[base_version:]:
                op = transform(op, committed_op, "right")
            undo[user].record(op, head)
        for other in USERS:
            if other != user:
                undo[other].transform(op)
        committed.append((op, user))
        documents.append(apply(head, op))
    return committed


def oracle(log: list[tuple[Delta, str]], version: int) -> tuple[Document, list[tuple[str, int]]]:
    """Replay from 0 with a user tag on every character."""
    text: list[tuple[str, str]] = []  # (char, user)
    document = Document()
    for op, user in log[:version]:
        document = apply(document, op)
        out: list[tuple[str, str]] = []
        i = 0
        for component in op.ops:
            kind = type(component).__name__
            if kind == "Insert":
                out.extend((ch, user) for ch in component.text)  # type: ignore[attr-defined]
            elif kind == "Delete":
                i += len(component)
            else:
                out.extend(text[i : i + len(component)])
                i += len(component)
        out.extend(text[i:])
        text = out
    spans: list[tuple[str, int]] = []
    for _, user in text:
        if spans and spans[-1][0] == user:
            spans[-1] = (user, spans[-1][1] + 1)
        else:
            spans.append((user, 1))
    return document, spans


def _seeds() -> list[int]:
    if "TANDEM_SIM_SEED" in os.environ:
        return [int(os.environ["TANDEM_SIM_SEED"])]
    return with_fresh_seeds([1, 2, 3], 1, name="history oracle", replay="TANDEM_SIM_SEED")


@pytest.mark.parametrize("seed", _seeds())
async def test_versions_and_authorship_equal_replaying_the_log(
    make_store: MakeStore, seed: int
) -> None:
    rng = random.Random(seed)
    log = random_history(seed, 700)
    store = make_store()
    await store.open()
    history = History(store, open_archive(store), checkpoint_every=50)
    document = Document()
    batch: list[OpRecord] = []
    for version, (op, user) in enumerate(log, start=1):
        document = apply(document, op)
        batch.append(record("doc", version, op, user, float(version)))
        if version % 37 == 0 or version == len(log):  # the session's snapshots, at its interval
            await store.append(batch)
            batch = []
            await store.save_snapshot(Snapshot("doc", version, document.to_delta()))

    async def check(h: History, versions: list[int]) -> None:
        oldest = await h.archive.oldest("doc")
        for version in versions:
            if version < oldest:
                with pytest.raises(HistoryCompacted) as caught:
                    await h.document_at("doc", version)
                assert caught.value.oldest == oldest
                assert str(oldest) in caught.value.message
                continue
            expected, spans = oracle(log, version)
            assert await h.document_at("doc", version) == expected, (seed, version)
            authorship = await h.authors_at("doc", version)
            assert len(authorship) == len(expected)
            assert authorship.spans() == spans, (seed, version)

    await check(history, [rng.randint(0, len(log)) for _ in range(12)] + [0, len(log)])
    cut = await history.compact("doc", keep_versions=300)
    assert cut is not None and cut <= len(log) - 300 and cut % 37 == 0
    await check(history, [rng.randint(0, len(log)) for _ in range(12)] + [cut - 1, cut])
    # a restart: a new store object over the same storage, nothing cached
    restarted = make_store()
    await restarted.open()
    again = History(restarted, open_archive(restarted), checkpoint_every=50)
    await check(again, [rng.randint(cut, len(log)) for _ in range(8)] + [cut, len(log)])
    later = await again.compact("doc", keep_days=0.0, now=len(log) - 100.0)
    assert later is not None and later > cut
    await check(again, [rng.randint(0, len(log)) for _ in range(8)] + [later])


async def test_changes_labels_and_errors(store: Store) -> None:
    history = History(store, open_archive(store), max_changes=3)
    ops = [
        Delta().insert("ab"),
        Delta().retain(1).insert("X"),
        Delta().delete(1),
        Delta().insert("!"),
    ]
    users = ["ann", "bob", "ann", "cy"]
    await store.append(
        [record("d", v, op, u) for v, (op, u) in enumerate(zip(ops, users, strict=True), 1)]
    )
    changes = await history.changes("d", 1, 4)
    assert changes.users == ["bob", "ann", "cy"]
    assert apply(await history.document_at("d", 1), changes.delta) == await history.document_at(
        "d", 4
    )
    with pytest.raises(VersionError, match="at most 3"):
        await history.changes("d", 0, 4)
    with pytest.raises(VersionError):
        await history.document_at("d", 5)
    label = await history.set_label("d", "  v1 sent to legal ", 2, "ann", 1.0)
    assert label.name == "v1 sent to legal"
    assert (await history.label("d", "v1 sent to legal")).version == 2
    with pytest.raises(NotFound):
        await history.label("d", "nope")
    with pytest.raises(VersionError):
        await history.set_label("d", "", 2, "ann", 1.0)
    with pytest.raises(VersionError):
        await history.set_label("d", "future", 9, "ann", 1.0)
    await history.delete_label("d", "v1 sent to legal")
    with pytest.raises(NotFound):
        await history.delete_label("d", "v1 sent to legal")
    # nothing to cut: no store snapshot yet
    assert await history.compact("d", keep_versions=1) is None

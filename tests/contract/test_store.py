"""The ``Store`` contract (``tandem/storage/base.py``), run against every backend.

Each test gets ``store`` (open, on fresh storage) for memory, sqlite and
postgres, and ``make_store`` for more store objects over the same storage.
One test per rule of the contract; the names say which rule.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import asyncpg  # type: ignore[import-untyped]
import pytest

from tandem.errors import ConflictError, InvalidOperation, StorageError
from tandem.ot.delta import Attributes, Delta
from tandem.storage import (
    DocumentInfo,
    LoadedDocument,
    MemoryStore,
    OpRecord,
    PostgresStore,
    Snapshot,
    SQLiteStore,
    Store,
    migrate,
    open_store,
)
from tandem.storage.schema import load_migrations, split_sqlite_script

pytestmark = pytest.mark.anyio

MakeStore = Callable[[], Store]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def op(
    doc: str,
    version: int,
    text: str | None = None,
    *,
    client_id: str = "c1",
    seq: int | None = None,
    user: str = "ann",
    time: float | None = None,
) -> OpRecord:
    """A one-insert op; ``seq`` defaults to the version, ``time`` to 1000 + version."""
    return OpRecord(
        doc=doc,
        version=version,
        op=Delta().insert(text if text is not None else f"{doc}{version} "),
        client_id=client_id,
        seq=version if seq is None else seq,
        user=user,
        time=1000.0 + version if time is None else time,
    )


def history(doc: str, count: int, start: int = 1) -> list[OpRecord]:
    return [op(doc, version) for version in range(start, start + count)]


async def state(store: Store, docs: Sequence[str]) -> object:
    """Everything observable about ``docs``, for "nothing changed" checks."""
    return (
        await store.list_documents(),
        [
            (await store.head(doc), await store.get_ops(doc, 0), await store.load(doc))
            for doc in docs
        ],
    )


# -- lifecycle ---------------------------------------------------------------------


async def test_every_backend_satisfies_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)


async def test_open_and_close_are_idempotent(make_store: MakeStore) -> None:
    store = make_store()
    await store.open()
    await store.open()
    await store.append([op("a", 1)])
    await store.close()
    await store.close()


async def test_using_a_store_that_is_not_open_is_a_programming_error(
    make_store: MakeStore,
) -> None:
    store = make_store()
    with pytest.raises(RuntimeError, match="not open"):
        await store.head("a")
    await store.open()
    await store.close()
    with pytest.raises(RuntimeError, match="not open"):
        await store.append([op("a", 1)])


async def test_a_new_store_is_empty(store: Store) -> None:
    assert await store.head("a") == 0
    assert await store.get_ops("a", 0) == []
    assert await store.find_seq("a", "c1", 1) is None
    assert await store.list_documents() == []
    loaded = await store.load("a")
    assert loaded == LoadedDocument(doc="a", snapshot=None, ops=[])
    assert loaded.version == 0


# -- append ------------------------------------------------------------------------


async def test_appended_records_read_back_equal(store: Store) -> None:
    records = [
        op("a", 1, "hello"),
        OpRecord("a", 2, Delta().retain(5).insert(" world", {"bold": True}), "c1", 2, "ann", 2.5),
        OpRecord("a", 3, Delta().retain(1).delete(4), "rest", None, "bot", 3.25),
    ]
    await store.append(records)
    assert await store.head("a") == 3
    assert await store.get_ops("a", 0) == records
    assert await store.load("a") == LoadedDocument("a", None, records)


async def test_an_empty_batch_is_a_no_op(store: Store) -> None:
    await store.append([])
    assert await store.list_documents() == []


async def test_a_batch_may_span_several_documents(store: Store) -> None:
    await store.append([op("b", 1)])
    batch = [op("a", 1), op("b", 2), op("a", 2), op("c", 1), op("b", 3)]
    await store.append(batch)
    assert [await store.head(doc) for doc in "abc"] == [2, 3, 1]
    assert await store.get_ops("a", 0) == [batch[0], batch[2]]
    assert await store.get_ops("b", 1) == [batch[1], batch[4]]
    assert [info.doc for info in await store.list_documents()] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("description", "batch"),
    [
        ("starts past head + 1", [op("a", 4)]),
        ("starts at a committed version", [op("a", 2, seq=100)]),
        ("starts at version 0", [op("a", 0, seq=100)]),
        ("starts at a negative version", [op("a", -1, seq=100)]),
        ("has a gap inside the batch", [op("a", 3), op("a", 5)]),
        ("repeats a version inside the batch", [op("a", 3), op("a", 3, seq=100)]),
        ("runs backwards inside the batch", [op("a", 4), op("a", 3)]),
        ("starts a new document past version 1", [op("new", 2)]),
    ],
)
async def test_versions_must_continue_the_log_exactly(
    store: Store, description: str, batch: list[OpRecord]
) -> None:
    await store.append(history("a", 2))
    before = await state(store, ["a", "new"])
    with pytest.raises(ConflictError):
        await store.append(batch)
    assert await state(store, ["a", "new"]) == before, description
    await store.append([op("a", 3)])  # the log still continues where it was
    assert await store.head("a") == 3


@pytest.mark.parametrize(
    "conflicting",
    [
        op("b", 1, seq=99),  # b's version 1 is taken
        op("b", 3, seq=99),  # gap in b
        op("b", 2, client_id="c1", seq=1),  # (c1, 1) already committed in b
    ],
    ids=["version-taken", "gap", "duplicate-seq"],
)
async def test_a_batch_with_one_conflicting_record_writes_nothing(
    store: Store, conflicting: OpRecord
) -> None:
    await store.append([op("b", 1, client_id="c1", seq=1)])
    before = await state(store, ["a", "b", "c"])
    batch = [op("a", 1, seq=10), op("a", 2, seq=11), op("c", 1, seq=12), conflicting]
    with pytest.raises(ConflictError):
        await store.append(batch)
    assert await state(store, ["a", "b", "c"]) == before
    for record in batch:
        if record.seq not in (None, 1):
            assert await store.find_seq(record.doc, record.client_id, record.seq) is None


async def test_a_conflict_is_a_storage_error(store: Store) -> None:
    await store.append([op("a", 1)])
    with pytest.raises(StorageError) as caught:
        await store.append([op("a", 1, seq=2)])
    assert caught.value.code == "ERR_CONFLICT"


# -- idempotency: (doc, client_id, seq) ------------------------------------------------


async def test_a_committed_client_seq_cannot_be_committed_again(store: Store) -> None:
    await store.append([op("a", 1, client_id="c1", seq=7)])
    with pytest.raises(ConflictError):
        await store.append([op("a", 2, client_id="c1", seq=7)])
    assert await store.head("a") == 1


async def test_a_client_seq_twice_in_one_batch_conflicts(store: Store) -> None:
    with pytest.raises(ConflictError):
        await store.append([op("a", 1, client_id="c1", seq=7), op("a", 2, client_id="c1", seq=7)])
    assert await store.head("a") == 0


async def test_seq_is_scoped_by_document_and_client_and_none_is_exempt(store: Store) -> None:
    await store.append(
        [
            op("a", 1, client_id="c1", seq=1),
            op("a", 2, client_id="c2", seq=1),
            op("b", 1, client_id="c1", seq=1),
            OpRecord("a", 3, Delta().insert("x"), "c1", None, "ann", 3.0),
            OpRecord("a", 4, Delta().insert("y"), "c1", None, "ann", 4.0),
        ]
    )
    assert [await store.head(doc) for doc in "ab"] == [4, 1]


async def test_find_seq_finds_the_committed_version(store: Store) -> None:
    await store.append([op("a", v, client_id="c1", seq=100 + v) for v in range(1, 4)])
    await store.append([op("a", 4, client_id="c2", seq=101), op("b", 1, client_id="c1", seq=103)])
    assert await store.find_seq("a", "c1", 102) == 2
    assert await store.find_seq("a", "c2", 101) == 4
    assert await store.find_seq("b", "c1", 103) == 1
    assert await store.find_seq("a", "c1", 104) is None
    assert await store.find_seq("a", "c3", 101) is None
    assert await store.find_seq("c", "c1", 101) is None


async def test_last_seq_is_the_highest_committed_seq_of_a_client(store: Store) -> None:
    await store.append([op("a", v, client_id="c1", seq=100 + v) for v in range(1, 4)])
    await store.append([op("a", 4, client_id="c2", seq=7), op("a", 5, client_id="c1", seq=None)])
    assert await store.last_seq("a", "c1") == 103
    assert await store.last_seq("a", "c2") == 7
    assert await store.last_seq("a", "c3") is None
    assert await store.last_seq("b", "c1") is None


# -- reads -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("from_version", "to_version", "expected"),
    [
        (0, None, [1, 2, 3, 4, 5]),
        (2, None, [3, 4, 5]),
        (2, 4, [3, 4]),
        (0, 1, [1]),
        (4, 5, [5]),
        (3, 3, []),
        (4, 2, []),
        (5, None, []),
        (9, None, []),
        (3, 99, [4, 5]),
        (-5, 2, [1, 2]),
        (0, 0, []),
        (0, -1, []),
    ],
)
async def test_get_ops_returns_the_half_open_range(
    store: Store, from_version: int, to_version: int | None, expected: list[int]
) -> None:
    await store.append(history("a", 5) + history("b", 2))
    ops = await store.get_ops("a", from_version, to_version)
    assert [record.version for record in ops] == expected
    assert all(record.doc == "a" for record in ops)


async def test_head_follows_appends(store: Store) -> None:
    for version in range(1, 4):
        await store.append([op("a", version)])
        assert await store.head("a") == version
    assert await store.head("b") == 0


async def test_load_without_snapshots_returns_every_op(store: Store) -> None:
    records = history("a", 4)
    await store.append(records)
    loaded = await store.load("a")
    assert loaded == LoadedDocument("a", None, records)
    assert loaded.version == 4


async def test_load_returns_the_newest_snapshot_and_only_the_ops_after_it(store: Store) -> None:
    records = history("a", 6)
    await store.append(records)
    newer = Snapshot("a", 4, Delta().insert("a1 a2 a3 a4 "), b"\x01\x02")
    older = Snapshot("a", 2, Delta().insert("a1 a2 "), None)
    await store.save_snapshot(newer)
    await store.save_snapshot(older)  # saved last, but older: "newest" means highest version
    loaded = await store.load("a")
    assert loaded == LoadedDocument("a", newer, records[4:])
    assert loaded.version == 6


async def test_load_with_a_snapshot_at_the_head_has_no_ops(store: Store) -> None:
    await store.append(history("a", 3))
    snapshot = Snapshot("a", 3, Delta().insert("a1 a2 a3 "))
    await store.save_snapshot(snapshot)
    loaded = await store.load("a")
    assert loaded == LoadedDocument("a", snapshot, [])
    assert loaded.version == 3


async def test_save_snapshot_replaces_one_at_the_same_version(store: Store) -> None:
    await store.append(history("a", 2))
    await store.save_snapshot(Snapshot("a", 2, Delta().insert("first"), b"old"))
    replacement = Snapshot("a", 2, Delta().insert("second", {"italic": True}), None)
    await store.save_snapshot(replacement)
    assert (await store.load("a")).snapshot == replacement
    assert await store.head("a") == 2  # a snapshot is not part of the op log


async def test_a_document_with_only_a_snapshot_is_listed_and_loads(store: Store) -> None:
    snapshot = Snapshot("imported", 0, Delta().insert("seed text"), b"y")
    await store.save_snapshot(snapshot)
    assert await store.load("imported") == LoadedDocument("imported", snapshot, [])
    assert await store.head("imported") == 0
    assert [info.doc for info in await store.list_documents()] == ["imported"]
    assert (await store.list_documents())[0].version == 0


async def test_list_documents_is_sorted_by_id_with_head_and_last_commit_time(store: Store) -> None:
    ids = ["b", "a", "B", "é", "a-2", "Ω", "😀", "a\u0301", "10", "9"]
    for index, doc in enumerate(ids):
        await store.append([op(doc, 1, time=100.0 + index)])
    await store.append([op("a", 2, time=500.5), op("a", 3, time=501.25)])
    infos = await store.list_documents()
    assert [info.doc for info in infos] == sorted(ids)  # code point order
    by_id = {info.doc: info for info in infos}
    assert by_id["a"] == DocumentInfo("a", 3, 501.25)
    assert by_id["😀"] == DocumentInfo("😀", 1, 100.0 + ids.index("😀"))


# -- exact round trips --------------------------------------------------------------

TEXTS = [
    "plain ascii",
    "emoji 😀 and a family 👨‍👩‍👧‍👦 and a flag 🇫🇷 and skin tone 👍🏽",
    "CJK 漢字かなカナ 한국어, RTL עברית العربية, combining e\u0301 and Å",
    "quotes \" ' ` and backslashes \\ \\\\ and \\u0041 literally",
    "controls \x00 \x01 \t \r\n line/paragraph separators \u2028 \u2029 bom \ufeff",
    "astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈 and private use \ue000 and noncharacter \ufffe",
    "\n",
]


async def test_unicode_emoji_and_attributes_round_trip_exactly(store: Store) -> None:
    attributes: Attributes = {
        "bold": True,
        "italic": False,
        "size": 12,
        "scale": 1.5,
        "tiny": 1e-300,
        "big": 2**31 - 1,
        "color": "#ff0000",
        "font": "Noto Sans 😀 漢字",
        "ünïcödé-kéy": "v",
    }
    delta = Delta()
    for index, text in enumerate(TEXTS):
        delta.insert(text, attributes if index % 2 else None)
    records = [
        OpRecord("dóc/😀 #1", 1, delta, "client ✓", 2**62, "user 👩‍💻", 1_700_000_000.123456789),
        OpRecord(
            "dóc/😀 #1",
            2,
            Delta()
            .retain(3, {"bold": None, "size": 14})
            .retain(2)
            .delete(4)
            .insert("🎉", attributes),
            "client ✓",
            None,
            "user 👩‍💻",
            0.1 + 0.2,
        ),
    ]
    await store.append(records)
    snapshot = Snapshot("dóc/😀 #1", 1, delta, bytes(range(256)))
    await store.save_snapshot(snapshot)
    assert await store.get_ops("dóc/😀 #1", 0) == records
    loaded = await store.load("dóc/😀 #1")
    assert loaded == LoadedDocument("dóc/😀 #1", snapshot, records[1:])
    assert loaded.snapshot is not None
    assert loaded.snapshot.content.to_json() == delta.to_json()
    assert type(loaded.snapshot.crdt) is bytes
    for got, sent in zip(await store.get_ops("dóc/😀 #1", 0), records, strict=True):
        assert got.op.to_json() == sent.op.to_json()
        assert got.time == sent.time and type(got.time) is float
    assert await store.find_seq("dóc/😀 #1", "client ✓", 2**62) == 1


@pytest.mark.parametrize(
    "delta",
    [
        Delta().insert("x", {"bold": None}),  # null removes formatting: only valid on retain
        Delta().insert("lone surrogate \ud800"),
    ],
    ids=["null-attribute-on-insert", "lone-surrogate"],
)
async def test_an_op_that_could_not_load_back_is_refused_before_commit(
    store: Store, delta: Delta
) -> None:
    with pytest.raises(InvalidOperation):
        await store.append([op("a", 1), OpRecord("a", 2, delta, "c1", 2, "ann", 2.0)])
    assert await store.head("a") == 0
    assert await store.list_documents() == []


async def test_callers_cannot_mutate_stored_state(store: Store) -> None:
    delta = Delta().insert("abc")
    await store.append([OpRecord("a", 1, delta, "c1", 1, "ann", 1.0)])
    delta.ops.clear()
    (await store.get_ops("a", 0))[0].op.ops.clear()
    (await store.load("a")).ops.clear()
    assert (await store.get_ops("a", 0))[0].op == Delta().insert("abc")


# -- durability and migrations ----------------------------------------------------------


async def test_reopening_keeps_everything(store: Store, make_store: MakeStore) -> None:
    await store.append(history("a", 3) + [op("b", 1, client_id="c9", seq=5)])
    await store.save_snapshot(Snapshot("a", 2, Delta().insert("a1 a2 "), b"crdt"))
    await store.save_snapshot(Snapshot("z", 0, Delta().insert("only a snapshot")))
    before = await state(store, ["a", "b", "z"])
    await store.close()

    reopened = make_store()  # a new object on the same file / schema
    await reopened.open()
    assert await state(reopened, ["a", "b", "z"]) == before
    assert await reopened.find_seq("b", "c9", 5) == 1
    with pytest.raises(ConflictError):
        await reopened.append([op("b", 2, client_id="c9", seq=5)])
    await reopened.append([op("a", 4)])
    assert await reopened.head("a") == 4


async def test_an_ops_crdt_update_round_trips(store: Store) -> None:
    plain = op("a", 1)
    yjs = OpRecord("a", 2, Delta().insert("y"), "y1", None, "ann", 1002.0, b"\x01\x02\x00\xff")
    await store.append([plain, yjs])
    loaded = await store.get_ops("a", 0)
    assert [record.crdt for record in loaded] == [None, b"\x01\x02\x00\xff"]
    assert (await store.load("a")).ops[1].crdt == yjs.crdt


async def test_migrations_are_applied_once(store: Store, make_store: MakeStore) -> None:
    await store.append([op("a", 1)])
    again = make_store()
    await again.open()  # while the first one is still open
    await again.open()
    assert await again.head("a") == 1
    expected = [(m.version, m.name) for m in load_migrations("postgres")]
    if isinstance(store, SQLiteStore):
        assert getattr(again, "applied_on_open", None) in ((), None)
        conn = sqlite3.connect(store.path)
        try:
            rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()
        finally:
            conn.close()
        assert rows == [(m.version, m.name) for m in load_migrations("sqlite")]
    elif isinstance(store, PostgresStore):
        assert getattr(again, "applied_on_open", None) == ()
        conn = await asyncpg.connect(store.dsn, server_settings={"search_path": str(store.schema)})
        try:
            rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY 1")
        finally:
            await conn.close()
        assert [tuple(row) for row in rows] == expected


async def test_two_stores_opening_new_storage_at_once_migrate_it_once(
    make_store: MakeStore,
) -> None:
    first, second = make_store(), make_store()
    async with anyio.create_task_group() as group:
        group.start_soon(first.open)
        group.start_soon(second.open)
    applied = [getattr(s, "applied_on_open", ()) for s in (first, second)]
    if not isinstance(first, MemoryStore):
        dialect = "sqlite" if isinstance(first, SQLiteStore) else "postgres"
        names = tuple(m.name for m in load_migrations(dialect))
        assert sorted(applied, key=len) == [(), names]
    await first.append([op("a", 1)])
    assert await second.head("a") == 1


# -- concurrency -------------------------------------------------------------------


async def _race(
    stores: Sequence[Store], batches: Sequence[list[OpRecord]]
) -> list[BaseException | None]:
    """Run ``stores[i].append(batches[i])`` concurrently; each outcome is None or the error."""
    outcomes: list[BaseException | None] = [None] * len(batches)

    async def run(index: int) -> None:
        try:
            await stores[index].append(batches[index])
        except ConflictError as exc:
            outcomes[index] = exc

    async with anyio.create_task_group() as group:
        for index in range(len(batches)):
            group.start_soon(run, index)
    return outcomes


async def test_two_concurrent_appenders_of_one_version_exactly_one_wins(
    store: Store, make_store: MakeStore
) -> None:
    other = make_store()  # postgres: a second pool; sqlite: a second connection pair
    await other.open()
    for version in range(1, 21):
        mine = op("a", version, f"mine{version}", client_id="me", seq=version)
        theirs = op("a", version, f"theirs{version}", client_id="them", seq=version)
        outcomes = await _race([store, other], [[mine], [theirs]])
        assert sorted(outcome is None for outcome in outcomes) == [False, True], outcomes
        winner = mine if outcomes[0] is None else theirs
        assert await store.get_ops("a", version - 1) == [winner]
        assert await other.head("a") == version


async def test_concurrent_multi_document_batches_neither_deadlock_nor_interleave(
    store: Store, make_store: MakeStore
) -> None:
    other = make_store()
    await other.open()
    for version in range(1, 11):
        # Opposite document order in the two batches: lock ordering must prevent a deadlock.
        forward = [op(doc, version, f"f{doc}", client_id="f") for doc in ("a", "b", "c")]
        backward = [op(doc, version, f"b{doc}", client_id="b") for doc in ("c", "b", "a")]
        outcomes = await _race([store, other], [forward, backward])
        assert sorted(outcome is None for outcome in outcomes) == [False, True], outcomes
        winner = "f" if outcomes[0] is None else "b"
        for doc in "abc":
            assert [r.client_id for r in await store.get_ops(doc, version - 1)] == [winner]


async def test_reads_never_see_a_partially_applied_batch(
    store: Store, make_store: MakeStore
) -> None:
    reader = make_store()
    await reader.open()
    size, batches = 25, 12
    done = anyio.Event()
    observed: set[int] = set()

    async def write() -> None:
        for index in range(batches):
            start = index * size + 1
            batch = [r for v in range(start, start + size) for r in (op("a", v), op("b", v))]
            await store.append(batch)
        done.set()

    async def read() -> None:
        while not done.is_set():
            head_a = await reader.head("a")
            ops_b = await reader.get_ops("b", 0)
            loaded = await reader.load("a")
            assert head_a % size == 0 and len(ops_b) % size == 0 and loaded.version % size == 0
            assert [r.version for r in loaded.ops] == list(range(1, loaded.version + 1))
            observed.add(loaded.version)
            await anyio.sleep(0)

    async with anyio.create_task_group() as group:
        group.start_soon(read)
        group.start_soon(write)
    assert await reader.head("b") == size * batches
    assert observed  # the reader really read while the writer wrote


# -- indexes: reads of one document touch only its rows ---------------------------------


async def test_log_reads_are_index_scans(store: Store) -> None:
    queries: dict[str, tuple[str, tuple[object, ...]]] = {
        "get_ops": (
            "SELECT op FROM ops WHERE doc = {} AND version > {} ORDER BY version",
            ("a", 2),
        ),
        "find_seq": (
            "SELECT version FROM ops WHERE doc = {} AND client_id = {} AND seq = {}",
            ("a", "c1", 1),
        ),
        "snapshot": (
            "SELECT content FROM snapshots WHERE doc = {} ORDER BY version DESC LIMIT 1",
            ("a",),
        ),
    }
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store.path)
        try:
            for name, (sql, args) in queries.items():
                plan = conn.execute("EXPLAIN QUERY PLAN " + sql.format(*["?"] * len(args)), args)
                details = " ".join(str(row[-1]) for row in plan)
                assert details.startswith("SEARCH") and " USING " in details, (name, details)
                assert "TEMP B-TREE" not in details, (name, details)
        finally:
            conn.close()
    elif isinstance(store, PostgresStore):
        conn = await asyncpg.connect(store.dsn, server_settings={"search_path": str(store.schema)})
        try:
            await conn.execute("SET enable_seqscan = off")
            for name, (sql, args) in queries.items():
                placeholders = [f"${i}" for i in range(1, len(args) + 1)]
                plan = await conn.fetch("EXPLAIN " + sql.format(*placeholders), *args)
                text = "\n".join(row[0] for row in plan)
                assert "Index" in text and "Sort" not in text, (name, text)
        finally:
            await conn.close()
    else:
        pytest.skip("MemoryStore indexes by construction")


# -- commit: visible at once, durable when its future says so -----------------------------


async def test_a_commit_is_visible_before_its_sync_completes(store: Store) -> None:
    sync = await store.commit(history("a", 2))
    # Before anything else runs on the loop (the sync may still be on its thread):
    assert await store.head("a") == 2
    assert [r.version for r in await store.get_ops("a", 0)] == [1, 2]
    if sync is not None:
        await sync
    with pytest.raises(ConflictError):
        await store.commit([op("a", 2)])  # checked like an append


async def test_a_commit_is_durable_once_its_sync_completes(make_store: MakeStore) -> None:
    first = make_store()
    await first.open()
    try:
        sync = await first.commit(history("a", 3))
        if sync is not None:
            await sync
    finally:
        await first.close()
    again = make_store()
    await again.open()
    try:
        assert await again.head("a") == 3
    finally:
        await again.close()


async def test_sqlite_commits_while_the_write_lock_is_taken_go_to_the_writer_thread(
    store: Store,
) -> None:
    if not isinstance(store, SQLiteStore):
        pytest.skip("SQLite's loop connection and write lock")
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock: the loop must not wait for it
    try:
        async with anyio.create_task_group() as group:
            done: list[object] = []

            async def commit() -> None:
                done.append(await store.commit([op("a", 1)]))

            group.start_soon(commit)
            await anyio.sleep(0.2)
            assert not done, "the commit went through while another connection held the lock"
            other.execute("COMMIT")
        assert done == [None], "a commit on the writer thread is durable when it returns"
        assert await store.head("a") == 1
    finally:
        other.close()


async def test_sqlite_a_failed_fsync_refuses_every_later_write(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not isinstance(store, SQLiteStore):
        pytest.skip("SQLite's WAL fsync")

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("tandem.storage.sqlite.os.fdatasync", failing)
    sync = await store.commit([op("a", 1)])
    assert sync is not None
    with pytest.raises(StorageError, match="could not be synced"):
        await sync
    with pytest.raises(StorageError, match="could not be synced"):
        await store.commit([op("a", 2)])
    with pytest.raises(StorageError, match="could not be synced"):
        await store.append([op("b", 1)])
    with pytest.raises(StorageError, match="could not be synced"):
        await store.head("a")  # what the disk holds is unknown until a restart


class _Disk:
    """Wraps ``os.fdatasync``: which threads synced which files."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.threads: list[str] = []
        self.files: list[str] = []
        real = os.fdatasync

        def fdatasync(fd: int) -> None:
            self.threads.append(threading.current_thread().name)
            self.files.append(os.path.realpath(f"/proc/self/fd/{fd}"))
            real(fd)

        monkeypatch.setattr("tandem.storage.sqlite.os.fdatasync", fdatasync)


async def test_sqlite_commits_within_the_sync_delay_share_one_fsync(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not isinstance(store, SQLiteStore):
        pytest.skip("SQLite's WAL fsync")
    disk = _Disk(monkeypatch)
    store.sync_delay = 0.05
    syncs = [await store.commit([op(doc, 1)]) for doc in ("a", "b", "c")]
    assert all(sync is not None and not sync.done() for sync in syncs)
    await anyio.sleep(0.01)
    assert disk.threads == [], "the sync waits for the delay, gathering commits"
    for sync in syncs:
        assert sync is not None
        await sync
    assert disk.threads == ["tandem-sqlite-writer"], "one fsync, off the event loop"
    assert disk.files == [os.path.realpath(f"{store.path}-wal")], "of the WAL, not another file"


async def test_sqlite_close_syncs_a_commit_still_waiting_for_its_delay(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_store()
    if not isinstance(first, SQLiteStore):
        pytest.skip("SQLite's WAL fsync")
    disk = _Disk(monkeypatch)
    await first.open()
    first.sync_delay = 60
    sync = await first.commit(history("a", 2))
    assert sync is not None and not sync.done()
    await first.close()
    assert sync.done() and sync.exception() is None
    assert disk.threads, "synced before the store closed"


async def test_sqlite_the_wal_is_checkpointed_and_reused(store: Store) -> None:
    if not isinstance(store, SQLiteStore):
        pytest.skip("SQLite's WAL")
    wal = Path(f"{store.path}-wal")
    sizes = []
    for version in range(1, 8 * 256 + 1):
        sync = await store.commit([op("a", version, "x" * 200)])
        if version % 16 == 0 and sync is not None:
            await sync  # the sixteen commits before it share it
        if version % 256 == 0:
            sizes.append(wal.stat().st_size)
    # Without checkpoints the WAL would grow by every commit's pages (~30 MB here);
    # checkpointed every ~4 MB of commits, a restarted WAL is written over from its start.
    assert max(sizes) < 8 * (1 << 20), sizes
    assert sizes[-1] < 1.05 * sizes[len(sizes) // 2], sizes  # reused, no longer growing


# -- choosing a backend by URL (not parametrised) ----------------------------------------


async def test_open_store_maps_urls_to_backends(tmp_path: Path) -> None:
    default = open_store("", tmp_path / "data")
    assert isinstance(default, SQLiteStore)
    assert default.path == tmp_path / "data" / "tandem.db"
    assert (tmp_path / "data").is_dir()
    absolute = open_store(f"sqlite:///{tmp_path}/x.db", tmp_path)
    assert isinstance(absolute, SQLiteStore) and absolute.path == tmp_path / "x.db"
    relative = open_store("sqlite:///rel/x.db", tmp_path)
    assert isinstance(relative, SQLiteStore) and relative.path == Path("rel/x.db")
    assert isinstance(open_store("memory://", tmp_path), MemoryStore)
    for url in ("postgresql://u@h:5432/d", "postgres://u@h/d"):
        postgres = open_store(url, tmp_path)
        assert isinstance(postgres, PostgresStore) and postgres.dsn == url
    for bad in ("mysql://x", "sqlite:///:memory:", "sqlite:///", "tandem.db"):
        with pytest.raises(ValueError):
            open_store(bad, tmp_path)


async def test_migrate_reports_what_it_applied(tmp_path: Path) -> None:
    assert await migrate("", tmp_path) == [m.name for m in load_migrations("sqlite")]
    assert await migrate("", tmp_path) == []
    assert await migrate("memory://", tmp_path) == []


async def test_an_sqlite_file_that_kept_heads_in_rows_upgrades_in_place(tmp_path: Path) -> None:
    # A file written under migrations 1 and 2, when a commit also rewrote its
    # document's row (head, updated): migration 3 reads heads from the ops instead.
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE schema_migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)"
    )
    for migration in load_migrations("sqlite")[:2]:
        for statement in split_sqlite_script(migration.sql):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, 0)", (migration.version, migration.name)
        )
    conn.executemany(
        'INSERT INTO ops (doc, version, op, client_id, seq, "user", time) '
        "VALUES (?, ?, ?, 'c1', ?, 'ann', ?)",
        [("a", 1, '[{"insert":"x"}]', 1, 101.0), ("a", 2, '[{"insert":"y"}]', 2, 102.5)],
    )
    conn.executemany(
        "INSERT INTO documents (doc, head, updated) VALUES (?, ?, ?)",
        [("a", 2, 102.5), ("imported", 0, 50.0)],
    )
    conn.execute(
        "INSERT INTO snapshots (doc, version, content) VALUES (?, 0, ?)",
        ("imported", '[{"insert":"s"}]'),
    )
    conn.commit()
    conn.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        assert store.applied_on_open[0] == "0003_head_from_ops"
        assert await store.head("a") == 2
        assert await store.list_documents() == [
            DocumentInfo("a", 2, 102.5),
            DocumentInfo("imported", 0, 50.0),
        ]
        with pytest.raises(ConflictError):
            await store.append([op("a", 2)])
        await store.append([op("a", 3, time=200.0), op("new", 1, time=300.0)])
        assert await store.head("a") == 3
        assert await store.list_documents() == [
            DocumentInfo("a", 3, 200.0),
            DocumentInfo("imported", 0, 50.0),
            DocumentInfo("new", 1, 300.0),
        ]
        assert [record.version for record in (await store.load("a")).ops] == [1, 2, 3]
    finally:
        await store.close()

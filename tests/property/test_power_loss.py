"""Power loss, simulated on the real SQLite store: seeded runs, many seeds.

SQLite commits on the event loop (``synchronous=NORMAL``: every reader sees the
commit at once, and sessions broadcast it) and acknowledges only once a later
``fdatasync`` of the WAL made it durable. A power loss between the two loses
what was committed but not synced. This drives ``SQLiteStore.commit`` with
random batches over a few documents and random waits for syncs, and cuts the
power at random moments, several times per run:

* **The disk** (``Disk``) keeps, for each of the store's files, the image a
  power loss would leave: the bytes covered by the last ``fdatasync`` the store
  called on that very file (the prefix written before the call), and
  everything after an operation of the writer thread, whose connection is
  ``synchronous=FULL`` (SQLite syncs the WAL inside every such commit). Nothing
  else survives: the WAL's later frames, and the shared-memory index, are gone.
* **Power loss**: the images are written to a fresh directory and a new store
  opens them (SQLite recovers from the WAL as after a real loss). Then:
  every acknowledged record (its sync completed) is there, unchanged; each
  document's history is a gap-free prefix of what was committed; what was
  committed and not recovered is counted as *lost* (other clients may have
  seen it: the session layer resyncs them), and the run continues on the
  recovered store from the recovered heads, as a restarted node would.

Because the images follow the file each sync names, the run fails when the
store syncs the wrong file (say the main database instead of its WAL): the
acknowledged records live only in the unsynced WAL and vanish at the next loss.

CI runs ``SEEDS`` seeds plus fresh ones; ``--slow`` runs ``SLOW_SEEDS``;
``TANDEM_SEED=S`` replays one.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tandem.ot import Delta
from tandem.storage import sqlite as sqlite_module
from tandem.storage.base import OpRecord
from tandem.storage.sqlite import SQLiteStore

from .seeds import with_fresh_seeds

SEEDS = 2_000
SLOW_SEEDS = 100_000
T = TypeVar("T")


class Disk:
    """What of each file a power loss would leave (see the module docstring)."""

    def __init__(self, home: Path | None = None) -> None:
        #: The folder of the running store's files; syncs of other files (a store
        #: from before the last power loss, still winding down) are not its business.
        self.home = home
        self.images: dict[str, bytes] = {}
        self.lock = threading.Lock()
        #: Syncs per file name, for the stats.
        self.syncs: Counter[str] = Counter()

    def keep_whole(self, *paths: Path) -> None:
        """Everything in ``paths`` is durable now (after a ``synchronous=FULL`` operation)."""
        with self.lock:
            for path in paths:
                if path.parent == self.home and path.exists():
                    self.images[str(path)] = path.read_bytes()

    def fdatasync(self, fd: int) -> None:
        """The real sync; then the prefix written before it is what survives."""
        size = os.fstat(fd).st_size
        os.fdatasync(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        if Path(path).parent != self.home:
            return
        with open(path, "rb") as file:
            durable = file.read(size)
        with self.lock:
            self.images[path] = durable
            self.syncs[Path(path).name] += 1

    def restore_into(self, folder: Path, name: str) -> Path:
        """Lay the surviving images out as ``folder/name`` (+ ``-wal``): the disk after the loss."""
        folder.mkdir(parents=True)
        with self.lock:
            images = dict(self.images)
        for path, data in images.items():
            if Path(path).name in (name, f"{name}-wal"):
                (folder / Path(path).name).write_bytes(data)
        return folder / name


#: The disk of every store running now, by the folder of its files.
DISKS: dict[Path, Disk] = {}


def disk_of(path: str | Path) -> Disk | None:
    return DISKS.get(Path(path).parent)


class _Os:
    """``os`` for the store's module, its syncs going through the current ``Disk``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fdatasync(self, fd: int) -> None:
        disk = disk_of(os.readlink(f"/proc/self/fd/{fd}"))
        if disk is None:  # a store from before a power loss, winding down
            os.fdatasync(fd)
        else:
            disk.fdatasync(fd)

    fsync = fdatasync


@contextmanager
def watched() -> Iterator[None]:
    """Route the store module's syncs and writer-thread operations through their ``Disk``.

    Depends on two private names of ``tandem.storage.sqlite`` (its ``os`` and
    ``SQLiteStore._write``): this test models the disk under that module.
    """
    original_write = SQLiteStore._write
    original_os = sqlite_module.os

    async def _write(self: SQLiteStore, fn: Callable[[], T]) -> T:
        disk = disk_of(self.path)

        def durable() -> T:
            result = fn()
            if disk is not None:
                disk.keep_whole(self.path, Path(f"{self.path}-wal"))
            return result

        return await original_write(self, durable)

    SQLiteStore._write = _write  # type: ignore[method-assign]
    sqlite_module.os = _Os()  # type: ignore[assignment]
    try:
        yield
    finally:
        SQLiteStore._write = original_write  # type: ignore[method-assign]
        sqlite_module.os = original_os


class Run:
    """One seeded run: documents, writers, commits, syncs and power losses."""

    def __init__(self, seed: int, folder: Path) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.folder = folder
        self.docs = [f"d{i}" for i in range(self.rng.randint(1, 3))]
        self.clients = [f"c{i}" for i in range(self.rng.randint(1, 4))]
        self.sync_delay = self.rng.choice([0.0, 0.0002, 0.001])
        self.losses = self.rng.randint(1, 3)
        #: Every record committed, by document and version (the store said so).
        self.committed: dict[str, dict[int, OpRecord]] = {d: {} for d in self.docs}
        #: Records whose sync completed: acknowledged to their authors.
        self.acked: set[tuple[str, int]] = set()
        self.heads = dict.fromkeys(self.docs, 0)
        self.seqs = dict.fromkeys(self.clients, 0)
        self.stats: Counter[str] = Counter()
        self.disk = Disk()
        #: Which process is running: acks of a store from before a loss are void.
        self.life = 0

    async def run(self) -> Counter[str]:
        first = self.folder / "start"
        first.mkdir()
        store = await self._open(first / "tandem.db")
        for _ in range(self.losses):
            store = await self._work_then_lose_power(store)
        await store.close()
        DISKS.pop(self.disk.home, None)  # type: ignore[arg-type]
        return self.stats

    async def _open(self, path: Path) -> SQLiteStore:
        store = SQLiteStore(path, sync_delay=self.sync_delay)
        DISKS.pop(self.disk.home, None)  # type: ignore[arg-type]
        self.disk = Disk(path.parent)
        DISKS[path.parent] = self.disk
        await store.open()
        return store

    async def _work_then_lose_power(self, store: SQLiteStore) -> SQLiteStore:
        syncs: list[tuple[asyncio.Future[None], list[OpRecord]]] = []
        for _ in range(self.rng.randint(1, 25)):
            roll = self.rng.random()
            if roll < 0.7:
                batch = self._batch()
                sync = await store.commit(batch)
                for record in batch:
                    self.committed[record.doc][record.version] = record
                if sync is None:
                    self._ack(batch)
                else:
                    sync.add_done_callback(partial(self._synced, self.life, batch))
                    syncs.append((sync, batch))
            elif roll < 0.85 and syncs:
                future, _ = self.rng.choice(syncs)
                await asyncio.shield(future)
            else:
                await asyncio.sleep(self.rng.choice([0, 0, 0, 0.0003]))
        # The power goes: whatever the disk holds right now is what survives, and
        # the old process acknowledges nothing more.
        self.life += 1
        acked_now = set(self.acked)
        self.stats["power_losses"] += 1
        folder = self.folder / f"after-loss-{self.stats['power_losses']}"
        survivor = self.disk.restore_into(folder, "tandem.db")
        recovered = await self._open(survivor)
        await self._check(recovered, acked_now)
        # The old process is gone; its store is closed only to stop its threads
        # (what it writes now lands outside the new disk's folder).
        await store.close()
        return recovered

    def _batch(self) -> list[OpRecord]:
        batch: list[OpRecord] = []
        for _ in range(self.rng.randint(1, 4)):
            doc = self.rng.choice(self.docs)
            client = self.rng.choice(self.clients)
            self.heads[doc] += 1
            self.seqs[client] += 1
            text = f"{client}:{self.seqs[client]};"
            batch.append(
                OpRecord(
                    doc, self.heads[doc], Delta().insert(text), client, self.seqs[client], "u", 0.0
                )
            )
        return batch

    def _synced(self, life: int, batch: list[OpRecord], sync: asyncio.Future[None]) -> None:
        if life == self.life and not sync.cancelled() and sync.exception() is None:
            self._ack(batch)

    def _ack(self, batch: Iterable[OpRecord]) -> None:
        for record in batch:
            self.acked.add((record.doc, record.version))

    async def _check(self, store: SQLiteStore, acked: set[tuple[str, int]]) -> None:
        for doc in self.docs:
            ops = await store.get_ops(doc, 0)
            versions = [op.version for op in ops]
            assert versions == list(range(1, len(ops) + 1)), f"{doc}: gaps {versions}"
            for op in ops:
                assert op == self.committed[doc][op.version], (
                    f"{doc} v{op.version}: {op} != {self.committed[doc][op.version]}"
                )
            head = len(ops)
            for version in range(1, self.heads[doc] + 1):
                if (doc, version) in acked:
                    assert version <= head, (
                        f"acked {doc} v{version} lost by a power loss (recovered head {head})"
                    )
            lost = self.heads[doc] - head
            self.stats["lost"] += lost
            self.stats["acked_at_loss"] += sum(1 for d, _ in acked if d == doc)
            # The restarted node continues from what it recovered.
            for version in range(head + 1, self.heads[doc] + 1):
                del self.committed[doc][version]
                self.acked.discard((doc, version))
            self.heads[doc] = head
        # Sequence numbers are per client and never reused, even after a loss.


#: The runs' files live in memory where the system has a tmpfs: the disk is modelled
#: by ``Disk`` anyway, and a real fdatasync per commit would make 2,000 seeds slow.
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


async def simulate(seed: int) -> Counter[str]:
    folder = Path(tempfile.mkdtemp(prefix="tandem-power-", dir=SCRATCH))
    try:
        return await Run(seed, folder).run()
    except BaseException as error:
        raise AssertionError(f"{error!r} (replay with TANDEM_SEED={seed})") from error
    finally:
        shutil.rmtree(folder, ignore_errors=True)


#: Runs at once: while one waits for a sync or a thread, another works.
CONCURRENT = 8


def run_seeds(seeds: Iterable[int]) -> Counter[str]:
    replay = os.environ.get("TANDEM_SEED")
    chosen = [int(replay)] if replay else list(seeds)
    totals: Counter[str] = Counter()

    async def main() -> None:
        for start in range(0, len(chosen), CONCURRENT):
            for stats in await asyncio.gather(
                *(simulate(seed) for seed in chosen[start : start + CONCURRENT])
            ):
                totals.update(stats)
                totals["seeds"] += 1

    with watched():
        asyncio.run(main())
    return totals


def test_power_loss_keeps_every_acknowledged_op() -> None:
    started = time.perf_counter()
    seeds = with_fresh_seeds(range(SEEDS), 100, name="power loss", replay="TANDEM_SEED")
    totals = run_seeds(seeds)
    print(f"{totals['seeds']} seeds in {time.perf_counter() - started:.1f}s: {dict(totals)}")
    if not os.environ.get("TANDEM_SEED"):
        # Guard against a run that never loses anything (then it proves nothing).
        assert totals["seeds"] >= SEEDS
        assert totals["lost"] > 100 and totals["acked_at_loss"] > 1000, dict(totals)


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_power_loss_keeps_every_acknowledged_op_long() -> None:
    run_seeds(range(SEEDS, SEEDS + SLOW_SEEDS))

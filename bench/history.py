"""What reading history costs on SQLite: a random version, and authorship.

Run: ``.venv/bin/python -m bench.history`` (``--versions N``, default 100,000).
Builds one document of N versions in a fresh SQLite file, as the server
leaves it: four users taking turns typing bursts of keystrokes (inserts of
one or two characters, some backspaces, some formats), committed in
batches, with a store snapshot every 100 versions (``snapshot_every``).
Then, through ``tandem.history.History``:

* a random version (``GET /api/docs/{id}?v=N``): median and p90 over 200;
* authorship (``GET …/authors``) of the head, a document of ~100,000
  characters: the first read (it walks the log once, saving a checkpoint
  every 1,000 versions), then the median over 200 reads of the head and of
  random versions.

The issue's bars: each median ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from tandem.history.service import History
from tandem.ot.compose import compose
from tandem.ot.delta import Delta
from tandem.ot.document import Document
from tandem.storage import OpRecord, Snapshot, SQLiteStore, open_archive

USERS = ("ann", "bob", "cy", "dee")


async def build(store: SQLiteStore, versions: int, seed: int = 1) -> Document:
    """Four users take turns typing bursts of 1-40 keystrokes (mostly one place, as people type)."""
    rng = random.Random(seed)
    document = Document()
    length = 0
    change = Delta()
    batch: list[OpRecord] = []
    user, burst, caret = USERS[0], 0, 0
    for version in range(1, versions + 1):
        if burst == 0:
            user, burst, caret = rng.choice(USERS), rng.randint(1, 40), rng.randint(0, length)
        burst -= 1
        roll = rng.random()
        if roll < 0.9 or length < 10:
            text = rng.choice(("a", "b ", "c", "😀", "de"))
            op = Delta().retain(min(caret, length)).insert(text)
            caret = min(caret, length) + len(text)
            length += len(text)
        elif roll < 0.97:
            caret = max(1, min(caret, length))
            op = Delta().retain(caret - 1).delete(1)
            caret -= 1
            length -= 1
        else:
            op = Delta().retain(rng.randrange(length - 3)).retain(3, {"bold": True})
        change = compose(change, op)
        batch.append(OpRecord("doc", version, op, "c", None, user, float(version)))
        if version % 100 == 0 or version == versions:  # as the session does: snapshot_every
            document = document.apply(change)
            change = Delta()
            await store.append(batch)
            batch = []
            await store.save_snapshot(Snapshot("doc", version, document.to_delta()))
    return document


def summary(times: list[float]) -> str:
    times = sorted(times)
    return (
        f"median {statistics.median(times) * 1000:6.2f} ms   "
        f"p90 {times[int(len(times) * 0.9)] * 1000:6.2f} ms   (n={len(times)})"
    )


async def main(versions: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "history.db")
        await store.open()
        started = time.perf_counter()
        head = await build(store, versions)
        print(
            f"built {versions:,} versions ({len(head):,} characters) "
            f"in {time.perf_counter() - started:.1f} s"
        )
        history = History(store, open_archive(store))
        rng = random.Random(2)

        times = []
        for _ in range(200):
            v = rng.randint(0, versions)
            t0 = time.perf_counter()
            await history.document_at("doc", v)
            times.append(time.perf_counter() - t0)
        print(f"a random version of {versions:,}:        {summary(times)}")

        t0 = time.perf_counter()
        authorship = await history.authors_at("doc", versions)
        first = time.perf_counter() - t0
        print(
            f"authorship, first read of the head ({len(authorship):,} chars, "
            f"{len(authorship.spans()):,} runs): {first * 1000:.0f} ms "
            "(walks the log once, saving checkpoints)"
        )
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            await history.authors_at("doc", versions)
            times.append(time.perf_counter() - t0)
        print(f"authorship of the head ({len(authorship):,} chars): {summary(times)}")
        times = []
        for _ in range(200):
            v = rng.randint(versions // 2, versions)
            t0 = time.perf_counter()
            await history.authors_at("doc", v)
            times.append(time.perf_counter() - t0)
        print(f"authorship at a random version (upper half): {summary(times)}")
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().versions))

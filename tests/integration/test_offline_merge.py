"""Offline merge (``merge`` / ``merged``, docs/protocol.md) against a real server process.

A raw client goes offline at version ``b`` with ~1,000 local edits while
another client commits ~300 ops; back online it re-joins with ``v=b``, sees
the catch-up, and sends its whole branch as one ``merge`` instead of resending
op by op. Its local document plus the reply's catch-up op must equal the
server's document, every uniquely inserted character must survive exactly
once (unless its own author deleted it), a third client typing during the
merge must be acknowledged, and a repeated ``merge`` (same ``seq``) must be
answered again without being applied twice.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Iterator

import pytest

from tandem.ot.delta import Delta
from tandem.ot.document import Document

from .harness import RawClient, ServerProcess, doc_state, token

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

DOC = "offline-merge"
BASE_CHARS = 2_000
OFFLINE_EDITS = 1_000
SERVER_OPS = 300
TYPED_DURING = 20


def _unique(start: int) -> Iterator[str]:
    """Characters from a CJK block, each used once (never in the ASCII base)."""
    return (chr(code) for code in itertools.count(start))


def _random_edit(
    rng: random.Random,
    document: Document,
    fresh: Iterator[str],
    inserted: set[str],
    deleted: set[str],
) -> Delta:
    """One random edit against ``document``: insert one fresh character, or delete 1-3."""
    length = len(document)
    if length > 10 and rng.random() < 0.3:
        pos = rng.randrange(length - 3)
        count = rng.randint(1, 3)
        deleted.update(document.text()[pos : pos + count])
        return Delta().retain(pos).delete(count) if pos else Delta().delete(count)
    char = next(fresh)
    inserted.add(char)
    pos = rng.randint(0, length)
    return Delta().retain(pos).insert(char) if pos else Delta().insert(char)


async def _catch_up(client: RawClient, version: int, document: Document) -> tuple[int, Document]:
    """Apply the ``op`` messages already queued for ``client`` after ``version``."""
    while True:
        try:
            message = await client.next(timeout=0.5)
        except TimeoutError:
            return version, document
        if message.get("type") == "op" and message["v"] > version:
            assert message["v"] == version + 1, "ops arrive in version order with no gaps"
            document = document.apply(Delta.from_json(message["op"]))
            version = message["v"]


async def test_offline_branch_merges_in_one_message(server: ServerProcess) -> None:
    rng = random.Random(5)
    base_text = "".join(rng.choice("abcdefghij klmnop\n") for _ in range(BASE_CHARS))
    writer = await RawClient.connect(server, f"token={token('wendy')}&doc={DOC}&client=wendy")
    await writer.expect("snapshot")
    await writer.send({"type": "op", "v": 0, "seq": 1, "op": [{"insert": base_text}]})
    base_version = (await writer.expect("ack", seq=1))["v"]

    off = await RawClient.connect(server, f"token={token('olive')}&doc={DOC}&client=olive")
    snapshot = await off.expect("snapshot")
    assert snapshot["v"] == base_version
    await off.close()

    # Offline: ~1,000 edits against olive's own local document.
    local = Document(base_text)
    branch: list[Delta] = []
    off_inserted: set[str] = set()
    off_deleted: set[str] = set()
    fresh_off = _unique(0x4E00)
    for _ in range(OFFLINE_EDITS):
        op = _random_edit(rng, local, fresh_off, off_inserted, off_deleted)
        local = local.apply(op)
        branch.append(op)

    # Meanwhile wendy commits ~300 ops.
    wendy_doc, version = Document(base_text), base_version
    wendy_inserted: set[str] = set()
    wendy_deleted: set[str] = set()
    fresh_wendy = _unique(0x6000)
    for seq in range(2, 2 + SERVER_OPS):
        op = _random_edit(rng, wendy_doc, fresh_wendy, wendy_inserted, wendy_deleted)
        await writer.send({"type": "op", "v": version, "seq": seq, "op": op.to_json()})
        version = (await writer.expect("ack", seq=seq))["v"]
        wendy_doc = wendy_doc.apply(op)

    # Back online: re-join from the base; the catch-up shows n ops missed.
    off = await RawClient.connect(server, f"token={token('olive')}&client=olive")
    await off.expect("hello")
    await off.send({"type": "join", "doc": DOC, "v": base_version})
    catchup = await off.expect("catchup")
    missed = len(catchup["ops"])
    assert missed * len(branch) >= 1_000  # the client's switch-over rule

    typist = await RawClient.connect(server, f"token={token('tom')}&doc={DOC}&client=tom")
    await typist.expect("snapshot")
    merge = {
        "type": "merge",
        "doc": DOC,
        "v": base_version,
        "seq": 1,
        "ops": [op.to_json() for op in branch],
        "ref": "m1",
    }
    started = time.perf_counter()
    await off.send(merge)
    # Typing elsewhere goes on while the server merges.
    typed = [chr(0x3040 + i) for i in range(TYPED_DURING)]
    for i, char in enumerate(typed):
        await typist.send({"type": "insert", "doc": DOC, "seq": i + 1, "pos": 0, "text": char})
    merged = await off.expect("merged", timeout=30)
    elapsed = time.perf_counter() - started
    acked = {(await typist.expect("ack", timeout=30))["seq"] for _ in typed}
    assert acked == set(range(1, TYPED_DURING + 1))
    print(
        f"merge of {len(branch)} offline ops vs {missed} missed: {elapsed * 1000:.0f} ms round trip"
    )

    assert merged["ref"] == "m1" and merged["seq"] == 1
    client_final = local
    local = local.apply(Delta.from_json(merged["op"]))
    merged_version = merged["v"]
    # Ops after the merge arrive as ordinary ops, in order, after the reply.
    version, local = await _catch_up(off, merged_version, local)
    state = await doc_state(server, DOC)
    assert state["v"] == version
    assert local.text() == state["text"]
    assert local.to_delta().to_json() == state["content"]

    text = state["text"]
    for char in off_inserted - off_deleted:
        assert text.count(char) == 1, f"offline insert {char!r} lost or doubled"
    for char in wendy_inserted - wendy_deleted:
        assert text.count(char) == 1, f"server insert {char!r} lost or doubled"
    for char in typed:
        assert text.count(char) == 1

    # The same merge again (a lost reply): answered, not applied twice.
    await off.send(merge)
    again = await off.expect("merged", timeout=30)
    assert again["v"] == state["v"]
    assert client_final.apply(Delta.from_json(again["op"])).text() == state["text"]
    after = await doc_state(server, DOC)
    assert after["v"] == state["v"] and after["text"] == state["text"]

    for client in (writer, off, typist):
        await client.close()


async def test_merge_errors_are_ordinary_error_replies(server: ServerProcess) -> None:
    client = await RawClient.connect(server, f"token={token('erin')}&doc=merge-errors")
    await client.expect("snapshot")
    await client.send({"type": "merge", "seq": 3, "ops": [[{"insert": "x"}]]})
    assert (await client.expect("error"))["code"] == "ERR_BAD_MESSAGE"  # no base version
    await client.send({"type": "merge", "v": 5, "seq": 3, "ops": [[{"insert": "x"}]]})
    error = await client.expect("error")
    assert error["code"] == "ERR_BAD_VERSION" and error["seq"] == 3
    await client.send({"type": "merge", "v": 0, "seq": 4, "ops": [[{"retain": 4}, {"delete": 1}]]})
    error = await client.expect("error")
    assert error["code"] == "ERR_OP_TOO_LONG" and error["seq"] == 4
    await client.send(
        {
            "type": "merge",
            "v": 0,
            "seq": 5,
            "ops": [[{"insert": "ab"}], [{"retain": 2}, {"insert": "c"}]],
        }
    )
    reply = await client.expect("merged")
    assert reply["v"] == 1 and reply["op"] == []
    assert (await doc_state(server, "merge-errors"))["text"] == "abc"
    await client.close()
    await asyncio.sleep(0)

"""The ``authorize`` hook in a real ``tandem serve``, with real clients on every path.

``hookmod.AuthorizingHooks`` allows at most 40 characters in ``rules/*``
documents, locks their first 5, hangs on ``HANG`` and raises on ``BOOM``.
Checked: a rejection reaches a raw ``/collab`` client (error naming seq, code
and reason), the Python client (its text returns to the server's), REST (403
with the rejection), a Yjs client on ``/yjs`` (Auth/permission-denied with the
reason; its replica reverts to the server's content) and on ``/hocuspocus``
(a Stateless message), and an offline merge; each time the document, the
replica and the stored log keep the server's content (for Yjs, the log holds
the client's change and the server's revert right behind it: docs/extending.md).
An allowed op commits normally. A hanging hook refuses its op after ``authorize_timeout`` (2 s; fail
closed) while another document's ops go on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tandem.client import TandemClient
from tandem.merge import hocuspocus as hp

from .harness import RawClient, ServerProcess, doc_ops, doc_state, three_nodes, token, until
from .hpclient import HPClient
from .yclient import YClient

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

HERE = Path(__file__).parent
TITLE = "TITLE"  # the 5 locked characters every rules/ document starts with here


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("authorize")
    (tmp_path / "hooks").mkdir()
    process = ServerProcess(
        tmp_path / "data",
        env={
            "TANDEM_HOOKS": "hookmod:AuthorizingHooks",
            "TANDEM_AUTHORIZE_TIMEOUT": "2",
            "TANDEM_TEST_HOOK_DIR": str(tmp_path / "hooks"),
            "PYTHONPATH": str(HERE),
        },
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def requests_seen(server: ServerProcess, doc: str) -> list[dict[str, Any]]:
    path = server.data_dir.parent / "hooks" / "authorize.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [entry for entry in map(json.loads, lines) if entry["doc"] == doc]


async def post(server: ServerProcess, doc: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{server.url}/api/docs/{doc}/ops",
            json=body,
            headers={"Authorization": f"Bearer {token('ada')}"},
        )


async def seeded(server: ServerProcess, doc: str, text: str = TITLE + " body") -> int:
    """``doc`` holding ``text`` (allowed: it starts at position 0 of an empty document)."""
    response = await post(server, doc, {"type": "insert", "pos": 0, "text": text})
    assert response.status_code == 200, response.text
    return int(response.json()["v"])


async def unchanged(server: ServerProcess, doc: str, version: int, text: str) -> None:
    """The document, its stored log and its replica (a fresh Yjs reader) hold ``text``."""
    state = await doc_state(server, doc)
    assert (state["v"], state["text"]) == (version, text)
    ops = await doc_ops(server, doc)
    assert [op["v"] for op in ops] == list(range(1, version + 1))
    reader = YClient(9001)
    await reader.connect(f"{server.ws_url}/yjs/{doc}?token={token('reader')}")
    await asyncio.wait_for(reader.synced.wait(), 10)
    assert reader.plain() == text
    await reader.disconnect()


async def test_collab_client_gets_the_reason_and_nothing_changes(server: ServerProcess) -> None:
    doc = "rules/collab"
    version = await seeded(server, doc)
    author = await RawClient.connect(server, f"token={token('ada')}&doc={doc}&client=a1")
    other = await RawClient.connect(server, f"token={token('bob')}&doc={doc}&client=b1")
    assert (await author.expect("snapshot"))["v"] == version
    await other.expect("snapshot")

    await author.send({"type": "op", "v": version, "seq": 1, "op": [{"insert": "x" * 40}]})
    error = await author.expect("error")
    assert error["code"] == "ERR_REJECTED" and error["seq"] == 1 and error["doc"] == doc
    assert error["rejection"]["code"] == "max_length"
    assert "at most 40 characters" in error["rejection"]["reason"] in error["message"]
    await author.send({"type": "op", "v": version, "seq": 2, "op": [{"delete": 2}]})
    locked = await author.expect("error", seq=2)
    assert locked["rejection"]["code"] == "locked"
    await unchanged(server, doc, version, TITLE + " body")

    # An allowed op commits as the next version; the other client hears only it.
    op = [{"retain": len(TITLE + " body")}, {"insert": "!"}]
    await author.send({"type": "op", "v": version, "seq": 3, "op": op})
    assert (await author.expect("ack"))["v"] == version + 1
    heard = await other.expect("op")
    assert heard["v"] == version + 1 and heard["op"] == op
    assert (await doc_state(server, doc))["text"] == TITLE + " body!"
    seen = requests_seen(server, doc)
    assert [(r["version"], r["source"], r["principal"]) for r in seen[-3:]] == [
        (version + 1, "op", "ada")
    ] * 3
    await author.close()
    await other.close()


async def test_op_is_seen_transformed_to_the_head(server: ServerProcess) -> None:
    doc = "rules/transformed"
    version = await seeded(server, doc, TITLE + " abc")
    ada = await RawClient.connect(server, f"token={token('ada')}&doc={doc}&client=a1")
    await ada.expect("snapshot")
    await ada.send({"type": "op", "v": version, "seq": 1, "op": [{"retain": 5}, {"insert": "12"}]})
    await ada.expect("ack")
    # Based on the old version: the hook sees it moved past ada's insert.
    await ada.send({"type": "op", "v": version, "seq": 2, "op": [{"retain": 9}, {"insert": "Z"}]})
    await ada.expect("ack")
    last = requests_seen(server, doc)[-1]
    assert last["op"] == [{"retain": 11}, {"insert": "Z"}] and last["head"] == 11
    assert (await doc_state(server, doc))["text"] == TITLE + "12 abcZ"
    await ada.close()


async def test_python_client_returns_to_the_server_text(server: ServerProcess) -> None:
    doc = "rules/python"
    version = await seeded(server, doc)
    async with TandemClient(f"{server.ws_url}/collab", token("ada")) as client:
        handle = await client.join(doc)
        handle.insert(0, "no")  # inside the locked range
        await until(lambda: any(e.code == "ERR_REJECTED" for e in handle.errors), timeout=10)
        rejected = next(e for e in handle.errors if e.code == "ERR_REJECTED")
        assert rejected.rejection == {
            "code": "locked",
            "reason": "the first 5 characters are locked",
        }
        await until(lambda: handle.text == TITLE + " body" and not handle.pending, timeout=10)
        handle.insert(len(handle.text), " ok")
        await handle.synced(timeout=10)
        assert handle.text == TITLE + " body ok"
    await unchanged(server, doc, version + 1, TITLE + " body ok")


async def test_rest_gets_403_with_the_reason(server: ServerProcess) -> None:
    doc = "rules/rest"
    version = await seeded(server, doc)
    response = await post(server, doc, {"type": "insert", "pos": 9, "text": "y" * 50})
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "ERR_REJECTED" and body["rejection"]["code"] == "max_length"
    await unchanged(server, doc, version, TITLE + " body")


async def test_offline_merge_is_rejected_whole(server: ServerProcess) -> None:
    doc = "rules/merge"
    version = await seeded(server, doc)
    ada = await RawClient.connect(server, f"token={token('ada')}&doc={doc}&client=m1")
    await ada.expect("snapshot")
    branch = [[{"retain": 9}, {"insert": " one"}], [{"delete": 1}]]  # the 2nd hits the lock
    await ada.send({"type": "merge", "v": version, "seq": 1, "ops": branch})
    error = await ada.expect("error", seq=1)
    assert error["code"] == "ERR_REJECTED" and error["rejection"]["code"] == "locked"
    assert requests_seen(server, doc)[-1]["source"] == "merge"
    await unchanged(server, doc, version, TITLE + " body")
    await ada.close()


async def test_yjs_client_is_reverted_and_told(server: ServerProcess) -> None:
    doc = "rules/yjs"
    version = await seeded(server, doc)
    y = YClient(4711)
    await y.connect(f"{server.ws_url}/yjs/{doc}?token={token('ada')}")
    await asyncio.wait_for(y.synced.wait(), 10)
    y.insert(2, "zz")  # inside the locked range
    await until(lambda: any(f.kind == 2 for f in y.frames), timeout=10)  # Auth: denied
    denied = next(f for f in y.frames if f.kind == 2)
    assert b"ERR_REJECTED" in denied.payload and b"locked" in denied.payload
    await until(lambda: y.plain() == TITLE + " body", timeout=10)
    # The server holds the client's items and, right behind them, its revert.
    await unchanged(server, doc, version + 2, TITLE + " body")
    change, revert = (await doc_ops(server, doc))[-2:]
    assert change["user"] == "ada" and change["op"] == [{"retain": 2}, {"insert": "zz"}]
    assert revert["user"] == "tandem:authorize" and revert["op"] == [{"retain": 2}, {"delete": 2}]
    # The same client goes on editing from there: its next update builds on the revert.
    y.insert(len(y.plain()), "!")
    await until(lambda: y.plain() == TITLE + " body!", timeout=10)
    await unchanged(server, doc, version + 3, TITLE + " body!")
    assert [r["source"] for r in requests_seen(server, doc)] == ["op", "yjs", "yjs"]
    await y.disconnect()


async def test_hocuspocus_client_gets_a_stateless_reason(server: ServerProcess) -> None:
    doc = "rules/hocuspocus"
    version = await seeded(server, doc)
    client = HPClient()
    await client.connect(f"{server.ws_url}/hocuspocus")
    entry = await client.open(doc, token("ada"), 5150)
    await until(lambda: entry.synced and entry.plain() == TITLE + " body", timeout=10)
    client.insert(doc, 9, "x" * 40)
    await until(lambda: entry.plain() == TITLE + " body" and entry.unsynced == 0, timeout=10)
    stateless = [json.loads(text) for text in entry.stateless]
    assert stateless and stateless[0]["code"] == "ERR_REJECTED"
    assert stateless[0]["rejection"]["code"] == "max_length" and stateless[0]["doc"] == doc
    assert entry.scope == "read-write" and not entry.denied  # still authenticated
    await unchanged(server, doc, version + 2, TITLE + " body")
    await client.close()
    assert hp.STATELESS == 5


async def test_a_hanging_hook_fails_closed_without_stalling_others(server: ServerProcess) -> None:
    hung, free = "plain/hung", "plain/free"
    stuck = await RawClient.connect(server, f"token={token('ada')}&doc={hung}&client=h1")
    await stuck.expect("snapshot")
    other = await RawClient.connect(server, f"token={token('bob')}&doc={free}&client=f1")
    version = (await other.expect("snapshot"))["v"]
    started = time.monotonic()
    await stuck.send({"type": "op", "v": 0, "seq": 1, "op": [{"insert": "HANG"}]})
    # While the hook hangs, the other document's ops commit one after another.
    for seq in range(1, 6):
        await other.send({"type": "op", "v": version, "seq": seq, "op": [{"insert": "f"}]})
        version = (await other.expect("ack", timeout=5))["v"]
    assert time.monotonic() - started < 1.5, "another document waited for the hanging hook"
    assert not stuck.inbox
    error = await stuck.expect("error", seq=1)
    assert error["code"] == "ERR_AUTHORIZE_FAILED" and time.monotonic() - started >= 1.9
    assert "longer than 2 s" in error["rejection"]["reason"]
    # The same document sequences again once the call timed out; a raising hook fails closed.
    await stuck.send({"type": "op", "v": 0, "seq": 2, "op": [{"insert": "BOOM"}]})
    assert (await stuck.expect("error", seq=2))["code"] == "ERR_AUTHORIZE_FAILED"
    await stuck.send({"type": "op", "v": 0, "seq": 3, "op": [{"insert": "fine"}]})
    assert (await stuck.expect("ack"))["v"] == 1
    assert (await doc_state(server, hung))["text"] == "fine"
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{server.url}/metrics")).text
    counts = {
        line.split('outcome="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("tandem_authorize_total{")
    }
    assert counts["failed_closed"] >= 2 and counts["rejected"] >= 1 and counts["allowed"] >= 1
    await stuck.close()
    await other.close()


async def test_rejections_of_ops_forwarded_to_the_owner_node(tmp_path: Path) -> None:
    """Three nodes on PostgreSQL and Redis: ops made on nodes that do not own the
    document are forwarded to the owner, whose hook rejects them; the reason comes back
    to the client on its own node, and every node's document is unchanged."""
    (tmp_path / "hooks").mkdir()
    env = {
        "TANDEM_HOOKS": "hookmod:AuthorizingHooks",
        "TANDEM_TEST_HOOK_DIR": str(tmp_path / "hooks"),
        "PYTHONPATH": str(HERE),
    }
    doc = "rules/cluster"
    with three_nodes(tmp_path, env) as nodes:
        version = await seeded(nodes[0], doc)  # node 0 opens it first: its owner
        ada = await RawClient.connect(nodes[1], f"token={token('ada')}&doc={doc}&client=c1")
        assert (await ada.expect("snapshot"))["v"] == version
        await ada.send({"type": "op", "v": version, "seq": 1, "op": [{"delete": 1}]})
        error = await ada.expect("error", seq=1)
        assert error["code"] == "ERR_REJECTED" and error["rejection"]["code"] == "locked"
        response = await post(nodes[2], doc, {"type": "insert", "pos": 9, "text": "y" * 50})
        assert response.status_code == 403, response.text
        assert response.json()["rejection"]["code"] == "max_length"
        y = YClient(4712)
        await y.connect(f"{nodes[2].ws_url}/yjs/{doc}?token={token('bob')}")
        await asyncio.wait_for(y.synced.wait(), 10)
        y.insert(1, "zz")
        await until(lambda: any(f.kind == 2 and b"locked" in f.payload for f in y.frames))
        await until(lambda: y.plain() == TITLE + " body", timeout=10)
        # A Hocuspocus provider on a node that does not own it: the reason, and the
        # server's text, and the write's SyncStatus once its revert is stored.
        provider = HPClient()
        await provider.connect(f"{nodes[1].ws_url}/hocuspocus")
        entry = await provider.open(doc, token("bob"), 5151)
        await until(lambda: entry.synced, timeout=10)
        provider.insert(doc, 0, "no")
        await until(lambda: bool(entry.stateless), timeout=10)
        assert json.loads(entry.stateless[0])["rejection"]["code"] == "locked"
        await until(lambda: entry.plain() == TITLE + " body", timeout=10)
        await until(lambda: entry.unsynced == 0, timeout=10)
        await provider.close()
        await ada.send(
            {"type": "op", "v": version, "seq": 2, "op": [{"retain": 10}, {"insert": "!"}]}
        )
        acked = (await ada.expect("ack", seq=2))["v"]
        for node in nodes:
            await until(lambda n=node: _text_at(n, doc, acked), timeout=10)
        owner_seen = [r["principal"] for r in requests_seen(nodes[0], doc)]
        assert owner_seen[0] == "ada" and None in owner_seen  # forwarded: no principal
        await y.disconnect()
        await ada.close()


def _text_at(node: ServerProcess, doc: str, version: int) -> bool:
    state = httpx.get(
        f"{node.url}/api/docs/{doc}", headers={"Authorization": f"Bearer {token('reader')}"}
    ).json()
    return bool(state["v"] == version and state["text"] == TITLE + " body!")


async def test_fail_open_commits_when_the_hook_fails(tmp_path: Path) -> None:
    """``authorize_failure = "allow"``: a raising or hanging hook lets the op commit."""
    (tmp_path / "hooks").mkdir()
    server = ServerProcess(
        tmp_path / "data",
        env={
            "TANDEM_HOOKS": "hookmod:AuthorizingHooks",
            "TANDEM_AUTHORIZE_FAILURE": "allow",
            "TANDEM_AUTHORIZE_TIMEOUT": "0.3",
            "TANDEM_TEST_HOOK_DIR": str(tmp_path / "hooks"),
            "PYTHONPATH": str(HERE),
        },
    )
    server.start()
    try:
        ada = await RawClient.connect(server, f"token={token('ada')}&doc=plain/open&client=o1")
        await ada.expect("snapshot")
        await ada.send({"type": "op", "v": 0, "seq": 1, "op": [{"insert": "BOOM"}]})
        assert (await ada.expect("ack", seq=1))["v"] == 1
        await ada.send({"type": "op", "v": 1, "seq": 2, "op": [{"insert": "HANG"}]})
        assert (await ada.expect("ack", seq=2))["v"] == 2
        # A rejection is still one: only failures are let through.
        rules = await RawClient.connect(server, f"token={token('ada')}&doc=rules-open&client=o2")
        await rules.expect("snapshot")
        await rules.send({"type": "op", "v": 0, "seq": 1, "op": [{"insert": "y" * 41}]})
        assert (await rules.expect("error", seq=1))["code"] == "ERR_REJECTED"
        text = httpx.get(f"{server.url}/metrics").text
        assert 'outcome="failed_open"} 2.0' in text
        await ada.close()
        await rules.close()
    finally:
        server.stop()

"""One owner per document, three ``tandem serve`` nodes on real PostgreSQL and Redis.

Each scenario types into one document from clients spread over the nodes
(the first joins on node 0, which so owns the document) and ends with every
keystroke present exactly once and every client converged:

* the owner SIGKILLed: a client of another node is acknowledged again within
  the lease TTL + 1 s (printed with ``pytest -s``);
* the owner SIGSTOPped past its lease with a commit queued, then SIGCONT (twice,
  the second time the node that took over): another node took the document
  over, the stale owner's queued commit is fenced (counted), and what it had
  sequenced is forwarded to the new owner, none of it lost;
* the owner SIGSTOPped while its commit holds its lease row: the server
  finishes the commit alone, and another node takes over while the owner is
  still stopped;
* a client of a node that does not own the document sends a long offline
  branch (``merge``): forwarded, answered once, every node's clients converge;
  and the same with the owner SIGKILLed the moment the merge goes out;
* every node SIGTERMed and restarted in turn (a rolling restart);
* Redis SIGKILLed and restarted (a private ``redis-server`` for this test);
* and, without load, a Yjs update and a REST post made on the other nodes are
  forwarded to the owner and reach every client.

The lease TTL is 2 s here (``harness.SHORT_LEASE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tandem.client import DocumentHandle, Status, TandemClient

from .harness import SHORT_LEASE, ServerProcess, free_port, metric, three_nodes, token
from .test_python_client import converged, type_into

pytestmark = [pytest.mark.integration]

TTL = float(SHORT_LEASE["TANDEM_LEASE_TTL"])


def urls(nodes: list[ServerProcess], first: int) -> list[str]:
    order = nodes[first:] + nodes[:first]
    return [f"{node.ws_url}/collab" for node in order]


def run(coroutine: object) -> None:
    async def main() -> None:
        await asyncio.wait_for(coroutine, 150)  # type: ignore[arg-type]

    asyncio.run(main())


#: One-character keys, each typed at most once, so that the final text shows any
#: keystroke lost or duplicated: the CJK ideographs (Extension A, the unified block,
#: Extension B), about 70,000. Six typists at one key per ~50 ms use 120 a second,
#: so a scenario runs out of time (``run``: 150 s) long before it runs out of keys.
KEYS = [
    chr(c)
    for start, end in ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0x20000, 0x2A6DF))
    for c in range(start, end + 1)
]


def distinct_keys(seed: int) -> Iterator[str]:
    """Every key of ``KEYS`` once, in an order of its own per ``seed``."""
    keys = list(KEYS)
    random.Random(seed).shuffle(keys)
    return iter(keys)


async def typing_crowd(
    nodes: list[ServerProcess], doc: str, seed: int
) -> tuple[list[TandemClient], list[DocumentHandle], Iterator[str]]:
    """Six clients, two per node, joined to ``doc`` (node 0's first: it owns ``doc``),
    and the distinct keys they type (as many as the scenario lasts for)."""
    clients = [
        TandemClient(
            urls(nodes, i % 3), token(f"c{seed}-{i}"), initial_backoff=0.02, max_backoff=0.5
        )
        for i in range(6)
    ]
    handles = [await client.join(doc, timeout=10) for client in clients]
    return clients, handles, distinct_keys(seed)


async def type_until(
    handles: list[DocumentHandle],
    keys: Iterator[str],
    pause: float,
    stop: asyncio.Event,
    allowed: asyncio.Event | None = None,
) -> list[str]:
    """Each handle types the next key of ``keys``, one every ``pause`` s, until ``stop``
    (however long the scenario takes: a slow machine restarts nodes slowly), and
    only while ``allowed`` is set, if given; returns the keys typed."""
    typed: list[str] = []

    async def typist(i: int) -> None:
        rng = random.Random(i)
        while not stop.is_set():
            if allowed is not None and not allowed.is_set():
                await allowed.wait()
                continue
            key = next(keys)
            await type_into(handles[i], rng, [key])
            typed.append(key)
            await asyncio.sleep(pause)

    await asyncio.gather(*(typist(i) for i in range(len(handles))))
    return typed


async def finish(handles: list[DocumentHandle], keys: list[str]) -> None:
    """Every client converges on a text holding each typed key exactly once."""
    await converged(handles, timeout=60)
    text = handles[0].text
    assert sorted(text) == sorted(keys), "a keystroke was lost or duplicated"


async def close_all(clients: list[TandemClient]) -> None:
    for client in clients:
        await client.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    with three_nodes(tmp_path) as nodes:
        yield nodes


def test_owner_killed_under_load_first_ack_within_ttl(cluster: list[ServerProcess]) -> None:
    async def scenario() -> None:
        clients, handles, keys = await typing_crowd(cluster, "kill", 1)
        probe = TandemClient(urls(cluster, 1), token("probe"), initial_backoff=0.02)
        try:
            probe_handle = await probe.join("kill", timeout=10)
            stop = asyncio.Event()
            typing = asyncio.create_task(type_until(handles, keys, 0.05, stop))
            await asyncio.sleep(1.0)
            killed = time.perf_counter()
            cluster[0].kill()
            probe_handle.insert(0, "!")
            await probe_handle.synced(30)
            first_ack = time.perf_counter() - killed
            await asyncio.sleep(0.5)
            stop.set()
            typed = await typing
            await finish([*handles, probe_handle], [*typed, "!"])
            print(f"\nowner SIGKILLed: first ack on another node {first_ack:.2f}s after the kill")
            assert first_ack <= TTL + 1, first_ack
            survivors = cluster[1:]
            assert sum(metric(node, "tandem_owned_documents") for node in survivors) == 1
            assert sum(metric(node, "tandem_commit_conflicts_total") for node in survivors) == 0
        finally:
            await close_all([*clients, probe])

    run(scenario())


def test_owner_paused_past_its_lease_is_fenced_and_loses_nothing(tmp_path: Path) -> None:
    # Only a commit decided before the pause and written after it can be fenced: an
    # owner that resumes past its local deadline forwards whatever arrives next. So
    # each round makes the owner hold exactly that. The crowd stops and settles (the
    # owner's committer is idle), a probe on the owner's node types a key and pings:
    # the pong comes after the op is sequenced and queued (a connection's messages
    # are handled in order), and the committer, woken by it, waits
    # TANDEM_COMMIT_MAX_DELAY (1 s) before writing it; the owner is SIGSTOPped at
    # the pong, with that commit queued. The crowd types on during the pause (the
    # other nodes take the document over); after SIGCONT the queued commit must be
    # fenced, counted, and its op sequenced again by the new owner, once.
    with three_nodes(tmp_path, {"TANDEM_COMMIT_MAX_DELAY": "1.0"}) as nodes:

        async def scenario() -> None:
            clients, handles, keys = await typing_crowd(nodes, "pause", 2)
            probes: list[TandemClient] = []
            probe_handles: list[DocumentHandle] = []
            probe_keys: list[str] = []
            try:
                typing_allowed = asyncio.Event()
                typing_allowed.set()
                stop = asyncio.Event()
                typing = asyncio.create_task(type_until(handles, keys, 0.05, stop, typing_allowed))
                paused: list[ServerProcess] = []
                for round_ in range(2):
                    await asyncio.sleep(1.0)
                    typing_allowed.clear()
                    await asyncio.gather(*(h.synced(30) for h in [*handles, *probe_handles]))
                    owner = await the_owner(nodes)
                    fenced_before = await asyncio.to_thread(
                        metric, owner, "tandem_fenced_commits_total"
                    )
                    probe = TandemClient(
                        urls(nodes, nodes.index(owner)), token(f"probe{round_}"), max_backoff=0.5
                    )
                    probes.append(probe)
                    probe_handle = await probe.join("pause", timeout=10)
                    probe_handles.append(probe_handle)
                    key = next(keys)
                    probe_keys.append(key)
                    probe_handle.insert(0, key)
                    await probe.ping(5)  # the op is queued for commit on the owner now
                    process = owner.process
                    assert process is not None
                    process.send_signal(signal.SIGSTOP)
                    paused.append(owner)
                    typing_allowed.set()
                    await asyncio.sleep(TTL * 2)  # well past its lease: another node takes over
                    process.send_signal(signal.SIGCONT)
                    fenced = await wait_for_metric(
                        owner, "tandem_fenced_commits_total", fenced_before + 1, 10
                    )
                    assert fenced >= fenced_before + 1, ownership_metrics(nodes, paused)
                stop.set()
                typed = await typing
                await finish([*handles, *probe_handles], [*typed, *probe_keys])
                seen = ownership_metrics(nodes, paused)
                assert metric(paused[-1], "tandem_owned_documents") == 0, seen
                assert sum(metric(node, "tandem_owned_documents") for node in nodes) == 1, seen
                conflicts = sum(metric(node, "tandem_commit_conflicts_total") for node in nodes)
                assert conflicts == 0, seen
            finally:
                await close_all([*clients, *probes])

        run(scenario())


async def wait_for_metric(node: ServerProcess, name: str, at_least: float, timeout: float) -> float:
    """``name`` on ``node`` once it reaches ``at_least``, or its value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(metric, node, name)
        if value >= at_least or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


async def the_owner(nodes: list[ServerProcess], timeout: float = 10) -> ServerProcess:
    """The one node that owns the document (a hand-over may be under way: wait for it)."""
    deadline = time.monotonic() + timeout
    while True:
        owned = await asyncio.gather(
            *(asyncio.to_thread(metric, node, "tandem_owned_documents") for node in nodes)
        )
        owners = [node for node, count in zip(nodes, owned, strict=True) if count == 1]
        if len(owners) == 1:
            return owners[0]
        assert time.monotonic() < deadline, f"{len(owners)} nodes own the document"
        await asyncio.sleep(0.05)


def ownership_metrics(nodes: list[ServerProcess], paused: list[ServerProcess]) -> str:
    """Each node's ownership metrics, for an assertion's message."""
    names = (
        "tandem_owned_documents",
        "tandem_fenced_commits_total",
        "tandem_commit_conflicts_total",
        "tandem_lease_owner_changes_total",
    )
    lines = [f"paused in turn: {[nodes.index(node) for node in paused]}"]
    for i, node in enumerate(nodes):
        lines.append(f"n{i}: " + ", ".join(f"{name}={metric(node, name)}" for name in names))
    return "\n".join(lines)


def test_owner_frozen_inside_its_commit_does_not_hold_the_takeover(
    cluster: list[ServerProcess],
) -> None:
    """The owner is SIGSTOPped while its commit waits inside the database, holding its
    lease row (``FOR SHARE``): the test holds the document's head row, then lets go.
    The commit is one statement, which the server finishes without the frozen node,
    so another node takes the document over within the TTL + 1 s while the owner is
    still stopped (with a commit of several round trips, it waited for the SIGCONT);
    every op is kept once."""
    import asyncpg  # type: ignore[import-untyped]

    dsn, _, query = cluster[0].env["TANDEM_DATABASE_URL"].partition("?")
    schema = query.removeprefix("schema=")

    async def scenario() -> None:
        frozen = TandemClient(urls(cluster, 0), token("fred"), initial_backoff=0.02)
        other = TandemClient(urls(cluster, 1), token("olga"), initial_backoff=0.02)
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        process = cluster[0].process
        assert process is not None
        stopped = False
        try:
            handle = await frozen.join("frozen", timeout=10)  # node 0 owns it
            handle.insert(0, "a")
            await handle.synced(10)
            other_handle = await other.join("frozen", timeout=10)
            # Hold the document's head row, so that the owner's next commit stops in
            # the middle of its transaction, after it share-locked the lease row.
            holding = conn.transaction()
            await holding.start()
            await conn.execute("SELECT head FROM documents WHERE doc = 'frozen' FOR UPDATE")
            handle.insert(1, "b")
            deadline = time.monotonic() + 10
            while not await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
            ):
                assert time.monotonic() < deadline, "the owner's commit never waited"
                await asyncio.sleep(0.01)
            process.send_signal(signal.SIGSTOP)
            stopped = True
            paused_at = time.perf_counter()
            await holding.rollback()  # the frozen node's commit goes on without it
            other_handle.insert(0, "c")
            with contextlib.suppress(TimeoutError):
                await other_handle.synced(TTL + 5)
            first_ack = time.perf_counter() - paused_at
            print(f"\nowner frozen mid-commit: first ack on another node {first_ack:.2f}s")
            assert not other_handle.pending and first_ack <= TTL + 1, first_ack
            process.send_signal(signal.SIGCONT)
            stopped = False
            await finish([handle, other_handle], ["a", "b", "c"])
            assert metric(cluster[0], "tandem_owned_documents") == 0
            assert sum(metric(node, "tandem_commit_conflicts_total") for node in cluster) == 0
        finally:
            if stopped:
                process.send_signal(signal.SIGCONT)
            await conn.close()
            await close_all([frozen, other])

    run(scenario())


async def offline_branch_merged_on_another_node(
    cluster: list[ServerProcess], doc: str, kill_owner_at_merge: bool
) -> None:
    """A client of node 1 (node 0 owns ``doc``) goes offline, types a long branch while a
    client of node 0 types too, and comes back: its one ``merge`` is forwarded to the
    owner and answered once (``merged`` received once), and every node's clients end
    with every key exactly once. ``kill_owner_at_merge``: node 0 is SIGKILLed the moment
    the merge goes out, so it is sequenced by whichever node takes the lease over."""
    from .test_python_client_merge import Gate, Keys, diverge, spy

    gate = Gate(token("away"))
    here = TandemClient(urls(cluster, 0), token("here"), initial_backoff=0.02, max_backoff=0.5)
    # Only node 1: a client given several nodes may come back on another.
    away = TandemClient([f"{cluster[1].ws_url}/collab"], gate, initial_backoff=0.01)
    watcher = TandemClient(urls(cluster, 2), token("watcher"), initial_backoff=0.02)
    keys = Keys(doc, spare=50)

    try:
        b = await here.join(doc, timeout=10)  # node 0 owns the document
        a = await away.join(doc, timeout=10)
        w = await watcher.join(doc, timeout=10)
        b.insert(0, "".join(keys.take(40)))
        await converged([a, b, w])
        await diverge(gate, away, a, b, keys)
        merged: list[int] = []

        def on_send(message: Any) -> bool:
            if message["type"] == "merge" and kill_owner_at_merge and not merged:
                merged.append(-1)
                cluster[0].kill()
            return True

        def on_receive(message: Any) -> bool:
            if message.get("type") == "merged":
                merged.append(message["seq"])
            return True

        sent = spy(away, on_send, on_receive)
        forwards_before = metric(cluster[1], "tandem_forward_seconds_count")
        gate.open.set()
        deadline = time.monotonic() + 60
        while not a.merges or a.state.status is Status.MERGING:
            assert time.monotonic() < deadline, "the merge did not finish"
            await asyncio.sleep(0.01)
        await finish([a, b, w], keys.typed)
        assert a.merges == 1 and sent.count("merge") >= 1
        assert [seq for seq in merged if seq >= 0] == [merged[-1]], merged  # one reply
        if not kill_owner_at_merge:
            assert sent.count("merge") == 1
            assert metric(cluster[1], "tandem_forward_seconds_count") > forwards_before
            assert metric(cluster[0], "tandem_owned_documents") == 1
            assert metric(cluster[1], "tandem_owned_documents") == 0
    finally:
        await close_all([here, away, watcher])


def test_offline_merge_on_a_node_that_does_not_own_the_document(
    cluster: list[ServerProcess],
) -> None:
    run(offline_branch_merged_on_another_node(cluster, "merge-forwarded", False))


def test_offline_merge_forwarded_while_the_owner_dies(cluster: list[ServerProcess]) -> None:
    run(offline_branch_merged_on_another_node(cluster, "merge-failover", True))


def test_rolling_restart_under_load_loses_nothing(cluster: list[ServerProcess]) -> None:
    async def scenario() -> None:
        clients, handles, keys = await typing_crowd(cluster, "rolling", 3)
        try:
            stop = asyncio.Event()
            typing = asyncio.create_task(type_until(handles, keys, 0.05, stop))
            for node in cluster:
                await asyncio.sleep(0.5)
                started = time.perf_counter()
                await asyncio.to_thread(node.stop)
                stopped = time.perf_counter() - started
                assert stopped < 10, f"SIGTERM took {stopped:.1f}s"
                await asyncio.to_thread(node.start)
            await asyncio.sleep(0.5)
            stop.set()
            typed = await typing
            await finish(handles, typed)
            assert sum(metric(node, "tandem_commit_conflicts_total") for node in cluster) == 0
        finally:
            await close_all(clients)

    run(scenario())


@contextlib.contextmanager
def private_redis(tmp_path: Path) -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    """A ``redis-server`` of this test's own (killing the shared one would hurt others)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    command = [binary, "--port", str(port), "--save", "", "--appendonly", "no"]
    command += ["--dir", str(tmp_path)]
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            time.sleep(0.02)
        raise TimeoutError("redis-server did not start")

    start()
    try:
        yield port, processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)


def test_redis_killed_and_restarted_under_load(tmp_path: Path) -> None:
    with private_redis(tmp_path) as (port, processes):
        env = {"TANDEM_REDIS_URL": f"redis://127.0.0.1:{port}/0?prefix=own:"}
        with three_nodes(tmp_path, env) as nodes:

            async def scenario() -> None:
                clients, handles, keys = await typing_crowd(nodes, "redis", 4)
                try:
                    stop = asyncio.Event()
                    typing = asyncio.create_task(type_until(handles, keys, 0.05, stop))
                    await asyncio.sleep(1.0)
                    processes[-1].kill()
                    processes[-1].wait(10)
                    await asyncio.sleep(1.5)
                    command = list(processes[-1].args)  # type: ignore[arg-type]
                    processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
                    await asyncio.sleep(1.5)
                    stop.set()
                    typed = await typing
                    await finish(handles, typed)
                finally:
                    await close_all(clients)

            run(scenario())


def test_yjs_updates_and_rest_posts_on_other_nodes_reach_the_owner(
    cluster: list[ServerProcess],
) -> None:
    """A Yjs client on node 1 and a REST post on node 2 are forwarded to node 0, the owner."""
    import httpx

    from .yclient import YClient

    async def scenario() -> None:
        owner = TandemClient(urls(cluster, 0), token("otto"))
        try:
            handle = await owner.join("mixed", timeout=10)
            handle.insert(0, "ot ")
            await handle.synced(10)
            y = YClient(4711)
            await y.connect(f"{cluster[1].ws_url}/yjs/mixed?token={token('yuki')}")
            await asyncio.wait_for(y.synced.wait(), 10)
            y.insert(len(y.plain()), "yjs ")
            async with httpx.AsyncClient() as http:
                response = await http.post(
                    f"{cluster[2].url}/api/docs/mixed/ops",
                    json={"type": "insert", "pos": 0, "text": "rest ", "client": "r1", "seq": 1},
                    headers={"Authorization": f"Bearer {token('rita')}"},
                    timeout=30,
                )
            assert response.status_code == 200, response.text
            deadline = time.monotonic() + 20
            while sorted(handle.text.split()) != ["ot", "rest", "yjs"]:
                assert time.monotonic() < deadline, handle.text
                await asyncio.sleep(0.05)
            await asyncio.wait_for(_until(lambda: y.plain() == handle.text), 20)
            await y.disconnect()
            assert metric(cluster[0], "tandem_owned_documents") == 1
            assert metric(cluster[1], "tandem_forward_seconds_count") >= 1
            assert metric(cluster[2], "tandem_forward_seconds_count") >= 1
        finally:
            await owner.close()

    run(scenario())


async def _until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.05)


def test_hocuspocus_write_on_a_node_that_does_not_own_the_document_is_acknowledged(
    cluster: list[ServerProcess],
) -> None:
    """A Hocuspocus provider on node 1 writes to a document node 0 owns: the write is
    forwarded, and node 1 answers it with SyncStatus(1) once the owner committed it
    (the provider's unsynced count goes back to 0); so is a resent update, which
    changes nothing."""
    from tandem.merge import hocuspocus as hp
    from tandem.merge import yproto

    from .hpclient import HPClient

    async def scenario() -> None:
        owner = TandemClient(urls(cluster, 0), token("otto"))
        provider = HPClient()
        try:
            handle = await owner.join("hp-forwarded", timeout=10)
            handle.insert(0, "ot")
            await handle.synced(10)
            await provider.connect(f"{cluster[1].ws_url}/hocuspocus")
            entry = await provider.open("hp-forwarded", token("hana"), 5252)
            await asyncio.wait_for(_until(lambda: entry.synced and entry.unsynced == 0), 10)
            before = entry.doc.get_state()
            provider.insert("hp-forwarded", 2, " hp")
            assert entry.unsynced == 1
            await asyncio.wait_for(_until(lambda: entry.unsynced == 0), 10)
            assert entry.statuses[-1] is True
            assert metric(cluster[1], "tandem_forward_seconds_count") >= 1
            await asyncio.wait_for(_until(lambda: handle.text == "ot hp"), 10)
            # The same update again: it changes nothing, and is acknowledged too.
            entry.unsynced += 1
            await provider.send(
                hp.wrap("hp-forwarded", yproto.sync_update(entry.doc.get_update(before)))
            )
            await asyncio.wait_for(_until(lambda: entry.unsynced == 0), 10)
            assert entry.statuses[-1] is True and entry.plain() == "ot hp"
            assert metric(cluster[0], "tandem_owned_documents") == 1
            assert metric(cluster[1], "tandem_owned_documents") == 0
        finally:
            await provider.close()
            await owner.close()

    run(scenario())

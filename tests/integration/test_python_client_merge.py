"""The Python client's offline merge against a real ``tandem serve`` subprocess.

A client goes offline (its token function holds the reconnect back), types
many scattered keys while another client types many, and comes back: the
catch-up is costly enough (``ClientState.merge_cost`` ≥ ``MERGE_AT``) that it
sends one ``merge`` instead of resending its buffer, keeps typing while the
server merges, and ends with exactly the server's text. Then the same with the
connection dropped during the merge: before the merge reached the server (it
is resent with the same ``seq``) and after the server committed it (the
re-join's catch-up shows it, so it is not sent again). Every key is distinct,
so a lost or doubled edit shows.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from tandem.client import DocumentHandle, Status, TandemClient

from .test_python_client import ALPHABET, Server, converged, run, tandem_server

pytestmark = pytest.mark.integration

__all__ = ["tandem_server"]  # the module-scoped server fixture, shared

OFFLINE_KEYS = 60
ONLINE_KEYS = 60


class Keys:
    """Distinct single-character keys for one scene, drawn in a seeded order; ``typed``
    lists every key taken, so the test can check each ends up in the text exactly once."""

    def __init__(self, doc: str, spare: int) -> None:
        sample = random.Random(doc).sample(ALPHABET, 2 * (OFFLINE_KEYS + ONLINE_KEYS) + spare)
        self._keys = iter(sample)
        self.typed: list[str] = []

    def take(self, count: int) -> list[str]:
        chunk = [next(self._keys) for _ in range(count)]
        self.typed.extend(chunk)
        return chunk


class Gate:
    """A token function that blocks reconnects while ``closed``: the client stays offline."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.open = asyncio.Event()
        self.open.set()

    async def __call__(self) -> str:
        await self.open.wait()
        return self.token


Hook = Callable[[Mapping[str, Any]], bool]
HookFactory = Callable[[TandemClient, DocumentHandle, DocumentHandle], Hook]


def spy(client: TandemClient, on_send: Hook | None, on_receive: Hook | None) -> list[str]:
    """Record the type of every message ``client`` sends; a hook returning False drops one."""
    sent: list[str] = []
    send, dispatch = client._send, client._dispatch

    def send_wrapper(message: Mapping[str, Any]) -> None:
        sent.append(str(message.get("type")))
        if on_send is None or on_send(message):
            send(message)

    def dispatch_wrapper(message: Mapping[str, Any]) -> None:
        if on_receive is None or on_receive(message):
            dispatch(message)

    client._send = send_wrapper  # type: ignore[method-assign]
    client._dispatch = dispatch_wrapper  # type: ignore[method-assign]
    return sent


async def scatter(
    handle: DocumentHandle, rng: random.Random, keys: list[str], *, each_synced: bool = False
) -> None:
    """Type ``keys`` at random places; ``each_synced``: one op (one version) per key."""
    for key in keys:
        handle.insert(rng.randint(0, len(handle.text)), key)
        if each_synced:
            await handle.synced(10)
        else:
            await asyncio.sleep(0)


async def diverge(
    gate: Gate, away: TandemClient, a: DocumentHandle, b: DocumentHandle, keys: Keys
) -> random.Random:
    """``away`` (``a``'s client) goes offline and ``a`` types ``OFFLINE_KEYS`` there,
    while ``b`` types ``ONLINE_KEYS`` live, each synced; returns the scene's rng."""
    gate.open.clear()
    await away.disconnect()
    rng = random.Random(1)
    await scatter(a, rng, keys.take(OFFLINE_KEYS))
    await scatter(b, rng, keys.take(ONLINE_KEYS), each_synced=True)
    assert not a.live and a.merges == 0
    return rng


async def server_text(server: Server, doc: str) -> str:
    """The document as a fresh client's snapshot shows it."""
    async with TandemClient(server.url, server.token) as fresh:
        return (await fresh.join(doc, timeout=10)).text


async def offline_then_back(
    server: Server,
    doc: str,
    on_send: HookFactory | None = None,
    on_receive: HookFactory | None = None,
) -> tuple[DocumentHandle, list[str], list[str]]:
    """The common scene; returns the offline handle, what it sent, and every key typed."""
    gate = Gate(server.token)
    away = TandemClient(server.url, gate, initial_backoff=0.01)
    here = TandemClient(server.url, server.token)
    keys = Keys(doc, spare=500)
    typed, take = keys.typed, keys.take

    try:
        a = await away.join(doc, timeout=10)
        b = await here.join(doc, timeout=10)
        a.insert(0, "".join(take(40)))
        await converged([a, b])

        rng = await diverge(gate, away, a, b, keys)

        sent = spy(
            away,
            on_send and on_send(away, a, b),
            on_receive and on_receive(away, a, b),
        )
        gate.open.set()
        # Keep typing while the merge is in flight, until its reply is applied.
        deadline = asyncio.get_running_loop().time() + 30
        while not a.merges or a.state.status is Status.MERGING:
            assert asyncio.get_running_loop().time() < deadline, "the merge did not finish"
            if a.state.status is Status.MERGING:
                a.insert(rng.randint(0, len(a.text)), take(1)[0])
            await asyncio.sleep(0.001)
        await converged([a, b])
        assert a.text == await server_text(server, doc)
        return a, sent, typed
    finally:
        await away.close()
        await here.close()


def test_offline_client_merges_keeps_typing_and_converges(tandem_server: Server) -> None:
    async def scenario() -> None:
        during: list[int] = []

        def on_send(_client: TandemClient, a: DocumentHandle, b: DocumentHandle) -> Hook:
            def hook(message: Mapping[str, Any]) -> bool:
                if message["type"] == "merge":
                    # Typed the moment the merge goes out: before any reply can arrive.
                    a.insert(0, "「")
                    a.insert(len(a.text), "」")
                    b.insert(0, "《")  # someone else types while the server merges
                    during.append(len(message["ops"]))
                return True

            return hook

        a, sent, typed = await offline_then_back(tandem_server, "py-merge", on_send)
        assert a.merges == 1 and sent.count("merge") == 1 and during == [1]
        # The buffer was not resent as an op: the one op is what was typed during the merge.
        assert sent.count("op") == 1
        text = a.text
        assert sorted(text) == sorted([*typed, "「", "」", "《"])
        assert text.index("「") < text.index("」")

    run(scenario)


def test_drop_before_the_merge_reaches_the_server_resends_it(tandem_server: Server) -> None:
    async def scenario() -> None:
        dropped: list[int] = []

        def on_send(client: TandemClient, a: DocumentHandle, _b: DocumentHandle) -> Hook:
            def hook(message: Mapping[str, Any]) -> bool:
                if message["type"] == "merge" and not dropped:
                    dropped.append(message["seq"])
                    a.insert(0, "「")
                    asyncio.get_running_loop().create_task(client.disconnect())
                    return False  # lost with the connection
                if message["type"] == "merge":
                    assert message["seq"] == dropped[0]  # the same merge, same seq
                return True

            return hook

        a, sent, typed = await offline_then_back(tandem_server, "py-merge-drop-1", on_send)
        assert a.merges == 1 and sent.count("merge") == 2
        assert sorted(a.text) == sorted([*typed, "「"])

    run(scenario)


def test_drop_after_the_server_committed_the_merge(tandem_server: Server) -> None:
    async def scenario() -> None:
        lost: list[int] = []

        def on_receive(client: TandemClient, _a: DocumentHandle, _b: DocumentHandle) -> Hook:
            def hook(message: Mapping[str, Any]) -> bool:
                if message.get("type") == "merged" and not lost:
                    # Committed, but the connection dies before the reply is read.
                    lost.append(message["seq"])
                    if client._ws is not None:
                        client._ws.transport.abort()
                    return False
                return True

            return hook

        a, sent, typed = await offline_then_back(
            tandem_server, "py-merge-drop-2", on_receive=on_receive
        )
        assert a.merges == 1 and lost
        # Sent once: the re-join's catch-up showed the merge committed.
        assert sent.count("merge") == 1
        assert sorted(a.text) == sorted(typed)

    run(scenario)

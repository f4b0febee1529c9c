"""The Python client against a real ``tandem serve`` subprocess.

Three ``TandemClient``s type concurrently into one document until they
converge; one drops its connection and keeps typing offline; one starts with a
dead URL first in its list. Every character typed must end up in the document
exactly once. The server is started the way a user would start it:
``tandem serve --port P --data DIR`` with a token from ``tandem token``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tandem.client import DocumentHandle, TandemClient

pytestmark = pytest.mark.integration

T = TypeVar("T")
# Distinct characters (some astral), so each keystroke can be found exactly once.
ALPHABET = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)] + [
    chr(c) for c in range(0x1F600, 0x1F650)
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    token: str


def tandem(*args: str) -> list[str]:
    return [sys.executable, "-m", "tandem", *args]


@pytest.fixture(scope="module")
def tandem_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``tandem serve`` on a free port with a temporary data directory (one per module)."""
    tmp_path = tmp_path_factory.mktemp("tandem")
    data = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    with serving(data, port, tmp_path / "server.log"):
        token = subprocess.run(
            tandem("token", "--user", "typist", "--doc", "*=write", "--data", str(data)),
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout.strip()
        yield Server(f"ws://127.0.0.1:{port}/collab", token)


@contextlib.contextmanager
def serving(data: Path, port: int, log: Path) -> Iterator[None]:
    """``tandem serve`` (no ``TANDEM_*`` settings) on ``port``, its output appended to ``log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    with log.open("a") as out:
        process = subprocess.Popen(
            tandem("serve", "--port", str(port), "--data", str(data), "--log-level", "warning"),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    raise RuntimeError(log.read_text())
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.05)
            yield
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run(coroutine: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coroutine(), 60)

    return asyncio.run(main())


async def converged(handles: list[DocumentHandle], timeout: float = 20.0) -> None:
    """Wait (on change events) until every handle is synced and shows the same version."""
    changed = asyncio.Event()
    unsubscribe = [handle.on_change(lambda _change: changed.set()) for handle in handles]
    try:
        await asyncio.gather(*(handle.synced(timeout) for handle in handles))
        deadline = asyncio.get_running_loop().time() + timeout
        while len({(h.version, h.text) for h in handles}) != 1 or any(h.pending for h in handles):
            changed.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError([(h.version, h.pending) for h in handles])
            # Acks change versions without a change event, hence the short wake-up.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, 0.1))
    finally:
        for stop in unsubscribe:
            stop()


async def type_into(
    handle: DocumentHandle, rng: random.Random, keys: list[str], *, deletes: bool = False
) -> None:
    """Type ``keys`` one by one at random places, like a (very fast) person."""
    for key in keys:
        handle.insert(rng.randint(0, len(handle.text)), key)
        if deletes and rng.random() < 0.1:
            # Select-and-retype: delete a just-typed key and type it again elsewhere.
            position = handle.text.index(key)
            handle.delete(position, 1)
            handle.insert(rng.randint(0, len(handle.text)), key)
        await asyncio.sleep(rng.choice([0, 0, 0.001, 0.003]))


def test_three_clients_typing_concurrently_converge(tandem_server: Server) -> None:
    async def scenario() -> None:
        clients = [TandemClient(tandem_server.url, tandem_server.token) for _ in range(3)]
        try:
            handles = [await client.join("race", timeout=10) for client in clients]
            rng = random.Random(7)
            keys = rng.sample(ALPHABET, 3 * 120)
            per_client = [keys[i::3] for i in range(3)]
            await asyncio.gather(
                *(
                    type_into(handle, random.Random(i), per_client[i], deletes=True)
                    for i, handle in enumerate(handles)
                )
            )
            await converged(handles)
            text = handles[0].text
            assert sorted(text) == sorted(keys)
            assert handles[0].version > 3
            for handle in handles:
                assert handle.content.text() == text
        finally:
            for client in clients:
                await client.close()

    run(scenario)


async def wait_for_connections(client: TandemClient, count: int, timeout: float = 20.0) -> None:
    """Until ``client`` has connected ``count`` times (it reconnects on its own)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while client.connections < count or not client.connected:
        assert asyncio.get_running_loop().time() < deadline, "the client did not reconnect"
        await asyncio.sleep(0.01)


def test_offline_typing_and_reconnect_lose_nothing(tandem_server: Server) -> None:
    async def scenario() -> None:
        dead = f"ws://127.0.0.1:{free_port()}/collab"
        clients = [
            TandemClient(tandem_server.url, tandem_server.token),
            TandemClient(tandem_server.url, tandem_server.token),
            # Fails over from a dead node to the live one.
            TandemClient([dead, tandem_server.url], tandem_server.token, initial_backoff=0.01),
        ]
        try:
            handles = [await client.join("offline", timeout=10) for client in clients]
            keys = random.Random(3).sample(ALPHABET, 3 * 80)
            per_client = [keys[i::3] for i in range(3)]

            async def flaky(handle: DocumentHandle, client: TandemClient) -> None:
                rng = random.Random(11)
                await type_into(handle, rng, per_client[0][:30])
                await client.disconnect()  # the client reconnects on its own
                await type_into(handle, rng, per_client[0][30:60])  # typed while reconnecting
                # Drop the *second* connection (on a busy machine the first reconnect may
                # not have happened yet after 30 keystrokes).
                await wait_for_connections(client, 2)
                await client.disconnect()
                await type_into(handle, rng, per_client[0][60:])

            await asyncio.gather(
                flaky(handles[0], clients[0]),
                type_into(handles[1], random.Random(1), per_client[1]),
                type_into(handles[2], random.Random(2), per_client[2]),
            )
            await converged(handles)
            assert sorted(handles[0].text) == sorted(keys)
            assert clients[0].connections >= 3
            assert handles[0].lost == []
        finally:
            for client in clients:
                await client.close()

    run(scenario)


def test_presence_is_seen_by_the_others(tandem_server: Server) -> None:
    async def scenario() -> None:
        alice = TandemClient(tandem_server.url, tandem_server.token)
        bob = TandemClient(tandem_server.url, tandem_server.token)
        try:
            a = await alice.join("cursors", timeout=10)
            b = await bob.join("cursors", timeout=10)
            a.insert(0, "hello world")
            await converged([a, b])
            seen = asyncio.Event()
            b.on_presence(lambda client: seen.set() if client == alice.client_id else None)
            a.set_presence((6, 5), {"color": "#e91e63"})
            await asyncio.wait_for(seen.wait(), 10)
            other = b.others[alice.client_id]
            assert other.cursor == (6, 5)
            assert other.state == {"color": "#e91e63"}
            # Bob types before Alice's selection: he sees it move.
            b.insert(0, ">> ")
            assert b.others[alice.client_id].cursor == (9, 5)
            await converged([a, b])
            assert b.others[alice.client_id].cursor == (9, 5)
        finally:
            await alice.close()
            await bob.close()

    run(scenario)


def test_undo_and_redo_take_back_only_our_own_edits(tandem_server: Server) -> None:
    async def scenario() -> None:
        alice = TandemClient(tandem_server.url, tandem_server.token)
        bob = TandemClient(tandem_server.url, tandem_server.token)
        try:
            a = await alice.join("undo-py", timeout=10)
            b = await bob.join("undo-py", timeout=10)
            for i, ch in enumerate("hello"):
                a.insert(i, ch)
            await converged([a, b])
            b.insert(2, "XY")  # Bob types inside Alice's word
            await converged([a, b])
            changes: list[str | None] = []
            a.on_change(lambda change: changes.append(change.origin))
            assert a.can_undo and not a.can_redo
            assert a.undo()
            assert a.text == "XY"
            await converged([a, b])
            assert b.text == "XY"  # Bob's text stays everywhere
            assert a.redo()
            await converged([a, b])
            assert b.text == "heXYllo"
            assert changes == ["undo", "redo"]
            a.insert(0, "!")
            assert not a.can_redo  # a new edit forgets the redo
            assert b.undo()  # Bob takes back his "XY", and only that
            await converged([a, b])
            assert a.text == b.text == "!hello"
        finally:
            await alice.close()
            await bob.close()

    run(scenario)

"""Graceful shutdown under load, end to end: ``tandem serve`` on SQLite, real signals.

Twenty raw clients type into five documents as fast as the server acknowledges
(each keeps a few ops in flight), then the server gets SIGTERM (or SIGINT):

* every client is closed with 1012, after the acks of what it had in flight:
  every op stored is one its author had acknowledged (none committed silently);
* the process exits within ``shutdown_timeout`` + ``CLOSE_GRACE``;
* after a restart on the same data, every acknowledged op is in its document
  exactly once (0 acked lost, none doubled).

A second signal right after the first makes the process exit at once, and
still loses nothing acknowledged.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from tandem.server.shutdown import CLOSE_GRACE

from .harness import ServerProcess, doc_state, token

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.alone]

CLIENTS = 20
DOCS = 5
IN_FLIGHT = 4
TIMEOUT = 5.0


class Typist:
    """Sends inserts of unique markers, ``IN_FLIGHT`` unacknowledged at a time."""

    def __init__(self, index: int, ws: websockets.ClientConnection) -> None:
        self.index = index
        self.doc = f"shut-{index % DOCS}"
        self.ws = ws
        self.sent: dict[int, str] = {}
        self.acked: dict[int, float] = {}
        self.close_code: int | None = None
        self._window = asyncio.Semaphore(IN_FLIGHT)

    def marker(self, seq: int) -> str:
        return f"<{self.index}.{seq}>"

    async def type(self) -> None:
        seq = 0
        try:
            while True:
                await self._window.acquire()
                if self.close_code is not None:
                    return
                seq += 1
                self.sent[seq] = self.marker(seq)
                await self.ws.send(
                    orjson.dumps(
                        {
                            "type": "insert",
                            "doc": self.doc,
                            "pos": 0,
                            "text": self.sent[seq],
                            "seq": seq,
                        }
                    ).decode()
                )
        except websockets.ConnectionClosed:
            pass

    async def read(self) -> None:
        try:
            async for frame in self.ws:
                data = orjson.loads(frame)
                for message in data if isinstance(data, list) else [data]:
                    if message.get("type") == "ack" and message.get("doc") == self.doc:
                        self.acked[message["seq"]] = time.monotonic()
                        self._window.release()
                    elif message.get("type") == "error":
                        self._window.release()
        except websockets.ConnectionClosed:
            pass
        self.close_code = self.ws.close_code or 1006
        self._window.release()  # let the typing task see the close and stop


async def typists(server: ServerProcess) -> list[Typist]:
    result = []
    for i in range(CLIENTS):
        doc = f"shut-{i % DOCS}"
        ws = await websockets.connect(
            f"{server.ws_url}/collab?doc={doc}&client=typist{i}",
            additional_headers={"Authorization": f"Bearer {token(f'user{i}')}"},
            max_size=None,
        )
        result.append(Typist(i, ws))
    return result


async def run_until_signalled(
    server: ServerProcess, signals: list[signal.Signals]
) -> tuple[list[Typist], float, float]:
    clients = await typists(server)
    tasks = [asyncio.create_task(c.read()) for c in clients]
    tasks += [asyncio.create_task(c.type()) for c in clients]
    await asyncio.sleep(1.0)  # load: let them type for a while
    assert sum(len(c.acked) for c in clients) > 100, "no load before the signal"
    assert server.process is not None
    signalled = time.monotonic()
    for sig in signals:
        server.process.send_signal(sig)
    exited = await asyncio.to_thread(server.process.wait, TIMEOUT + CLOSE_GRACE + 10)
    took = time.monotonic() - signalled
    server._collect()  # its output, and its pipe closed
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert exited is not None
    return clients, signalled, took


async def assert_nothing_acked_lost(
    server: ServerProcess, clients: list[Typist], *, all_stored_acked: bool
) -> int:
    """Restart ``server``: every acked op is stored once; with ``all_stored_acked``, every
    stored op was acked too (the drain acknowledged all it had taken in)."""
    server.start()
    texts: dict[str, Any] = {}
    for d in range(DOCS):
        texts[f"shut-{d}"] = (await doc_state(server, f"shut-{d}"))["text"]
    acked = 0
    for client in clients:
        text = texts[client.doc]
        for seq in client.acked:
            marker = client.marker(seq)
            assert text.count(marker) == 1, f"acked {marker} found {text.count(marker)} times"
            acked += 1
        for seq, marker in client.sent.items():
            assert text.count(marker) <= 1, f"{marker} doubled"
            if all_stored_acked and marker in text:
                assert seq in client.acked, f"{marker} was committed but never acknowledged"
    return acked


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_under_load_acks_what_is_in_flight_and_closes_1012(
    tmp_path: Path, sig: signal.Signals
) -> None:
    server = ServerProcess(tmp_path / "data", env={"TANDEM_SHUTDOWN_TIMEOUT": str(TIMEOUT)})
    server.start()
    try:
        clients, signalled, took = await run_until_signalled(server, [sig])
        assert took < TIMEOUT + CLOSE_GRACE, f"exit took {took:.2f}s"
        codes = {c.close_code for c in clients}
        assert codes == {1012}, codes
        after = sum(1 for c in clients for t in c.acked.values() if t > signalled)
        assert after > 0, "nothing in flight was acknowledged during the drain"
        acked = await assert_nothing_acked_lost(server, clients, all_stored_acked=True)
        print(f"{acked} acked ops kept, {after} acked during the drain, exit in {took:.2f}s")
    finally:
        server.stop()


async def test_a_second_signal_exits_at_once_and_loses_nothing_acked(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"TANDEM_SHUTDOWN_TIMEOUT": "60"})
    server.start()
    try:
        clients, _, took = await run_until_signalled(server, [signal.SIGTERM, signal.SIGTERM])
        assert took < 3.0, f"a second signal should end it at once, took {took:.2f}s"
        await assert_nothing_acked_lost(server, clients, all_stored_acked=False)
    finally:
        server.stop()

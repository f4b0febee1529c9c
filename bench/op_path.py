"""Tandem's own CPU per op and per delivery, in one process, without sockets.

``python -m bench.op_path`` drives the real ``/collab`` path — ``CollabProtocol``
(handshake, frame parsing), ``Connection``, the document session, sequencer,
CRDT replica, group commit and store, the fan-out — over in-memory transports
that only count what they are given. Every op is one masked WebSocket frame
fed to its author's protocol; the next op goes in once the author's ack has
been written (or ``--gap`` seconds later, so the loop idles between ops as a
server's does; the timer wake-ups then add their own cost and noise). What is
left out is the kernel's share (the socket reads and writes, and the
generator), which ``python -m bench`` measures.

Reported per scenario (median over rounds): process CPU seconds (all threads:
the event loop and the SQLite threads, fsync included) per op and per
delivery, and wall time per op from frame to ack (gaps excluded). Two shapes,
the two ends of ``python -m bench``: ``10x1`` (ten clients in a document, one
typist: per-op cost over 9 deliveries, as at 2,000 clients over 200
documents) and ``200x1`` (200 clients, one typist: fan-out cost, as at 200
clients in one document).

Unlike the socket benchmark, this one hardly depends on what else the machine
does (CPU time, not latency), so a change to the hot path can be compared
before/after in a minute: run it on both checkouts, alternately.

``TANDEM_*`` variables apply as they do to ``tandem serve``. On SQLite an ack
waits for the sync window (``TANDEM_SYNC_DELAY``, 5 ms by default), so the loop
idles before every op and the CPU per op includes waking up cold after it: on
a VM several hundred µs more per op than the same path run back to back.
Compare hot-path code with ``TANDEM_SYNC_DELAY=0``, idle costs with ``--gap``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode

from tandem.server.app import Tandem
from tandem.server.uvicorn_glue import CollabServer
from tandem.settings import Settings

#: name -> (clients in the document, ops per round)
SHAPES: dict[str, tuple[int, int]] = {"10x1": (10, 1000), "200x1": (200, 200)}
SECRET = "op-path-secret-0123456789abcdef0123456789"


class CountingTransport(asyncio.Transport):
    """A transport that keeps nothing: it counts op messages and wakes a waiter on an ack."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index
        #: Op messages written to this client (others' ops it was told of).
        self.ops = 0
        self.acked: asyncio.Future[None] | None = None
        self.joined: asyncio.Future[None] | None = None
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.ops += bytes(data).count(b'"type":"op"')
        if self.joined is not None and b'"snapshot"' in data:
            self.joined.set_result(None)
            self.joined = None
        if self.acked is not None and b'"ack"' in data:
            self.acked.set_result(None)
            self.acked = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return ("127.0.0.1", 40000 + self.index)
        if name == "sockname":
            return ("127.0.0.1", 8080)
        return default

    def get_protocol(self) -> Any:
        return None

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def abort(self) -> None:
        self._closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def masked_text_frame(payload: bytes) -> bytes:
    """A client-to-server text frame, as a browser sends it (masked)."""
    return Frame(Opcode.TEXT, payload).serialize(mask=True)


def request(doc: str, client: str, token: str) -> bytes:
    return (
        f"GET /collab?doc={doc}&client={client}&token={token} HTTP/1.1\r\n"
        "Host: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def run_shape(
    database: str, clients: int, ops: int, rounds: int, gap: float = 0.0
) -> list[dict[str, float]]:
    """One document, ``clients`` sockets, the first one typing; per round of ``ops`` ops.

    ``gap``: seconds the typist waits after each ack, so the loop idles between
    ops as a server's does.
    """
    with tempfile.TemporaryDirectory(prefix="tandem-op-path-") as data:
        return await _run(Path(data), database, clients, ops, rounds, gap)


async def _run(
    data: Path, database: str, clients: int, ops: int, rounds: int, gap: float
) -> list[dict[str, float]]:
    # TANDEM_* variables apply (TANDEM_SYNC_DELAY, say), then these.
    settings = Settings.from_env(
        data_dir=data,
        database_url=database if database != "sqlite" else "",
        jwt_secret=SECRET,
        message_burst=1_000_000,
        max_connections_per_user=0,
        max_connections_per_ip=0,
    )
    tandem = Tandem(settings)
    await tandem.start()
    try:
        token = tandem.authenticator.issue("bench", docs={"*": "write"}, ttl=3600, now=time.time())
        # No keepalive: these clients never answer a ping, and a run of SQLite ops
        # (each waiting for its sync window) outlasts the ping interval + timeout.
        config = uvicorn.Config(
            app=None,  # type: ignore[arg-type]
            log_level="warning",
            ws_ping_interval=None,
        )
        server = CollabServer(tandem)
        state = ServerState()
        loop = asyncio.get_running_loop()
        protocols, transports = [], []
        for i in range(clients):
            transport = CountingTransport(i)
            protocol = server(config, state, {})
            protocol.connection_made(transport)
            transport.joined = loop.create_future()
            protocol.data_received(request("op-path", f"c{i}", token))
            await transport.joined
            protocols.append(protocol)
            transports.append(transport)
        author, author_transport = protocols[0], transports[0]
        results = []
        version = 0
        for _ in range(rounds + 1):  # the first round warms up
            # Each op is based on the head, like a typist's that heard its last ack.
            frames = [
                masked_text_frame(
                    b'{"type":"op","v":%d,"seq":%d,"op":[{"insert":"x"}]}' % (v, v + 1)
                )
                for v in range(version, version + ops)
            ]
            told = sum(t.ops for t in transports)
            cpu, wall = time.process_time(), time.perf_counter()
            for frame in frames:
                author_transport.acked = loop.create_future()
                acked = author_transport.acked
                author.data_received(frame)
                await acked
                if gap:
                    await asyncio.sleep(gap)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall - ops * gap
            deliveries = sum(t.ops for t in transports) - told
            version += ops
            results.append(
                {
                    "deliveries": deliveries,
                    "cpu_us_per_op": cpu / ops * 1e6,
                    "cpu_us_per_delivery": cpu / max(deliveries, 1) * 1e6,
                    "wall_us_per_op": wall / ops * 1e6,
                }
            )
        for protocol in protocols:
            protocol.connection_lost(None)
        return results[1:]
    finally:
        await tandem.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="memory://", help="memory:// or sqlite")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--gap", type=float, default=0.0, help="seconds between an ack and the next op"
    )
    args = parser.parse_args(argv)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    for name in args.shapes.split(","):
        clients, ops = SHAPES[name]
        results = runner(run_shape(args.database, clients, ops, args.rounds, args.gap))
        line = "  ".join(
            f"{key} {statistics.median(r[key] for r in results):8.1f}"
            for key in results[0]
            if key != "deliveries"
        )
        print(f"{name:6} {args.database:10} {line}", flush=True)


if __name__ == "__main__":
    main()

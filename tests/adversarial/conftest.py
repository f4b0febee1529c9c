"""A real ``tandem serve`` to attack, and what the attacks measure.

Each test runs its attack against ``tandem serve`` in a subprocess (production
mode: a configured secret, no development tokens), and asserts one of three
things (docs/security.md, "Resource model"): the server's memory, read from
``/proc/<pid>/status``, stays within the documented budget; an honest
client's latency stays within 2× of what it was before the attack (measured in
the same test); or the attack is refused with the documented code.

``--slow`` runs every attack for minutes, several attackers at once.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.integration.harness import RawClient, ServerProcess, token

MIB = 1 << 20
#: Linux's TCP_ESTABLISHED, the first byte of ``TCP_INFO``.
ESTABLISHED = 1


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def slow(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--slow"))


def rss(pid: int) -> int:
    """The process's resident memory, in bytes (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def pid_of(server: ServerProcess) -> int:
    assert server.process is not None
    return server.process.pid


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data", env={"TANDEM_MESSAGE_BURST": "400"})
    process.start()
    try:
        yield process
    finally:
        process.stop()


def start_server(tmp_path: Path, **env: str) -> ServerProcess:
    process = ServerProcess(
        tmp_path / "data",
        env={"TANDEM_MESSAGE_BURST": "400", **{f"TANDEM_{k.upper()}": v for k, v in env.items()}},
    )
    process.start()
    return process


async def latencies(probe: Callable[[], Awaitable[None]], seconds: float) -> list[float]:
    """Run ``probe`` back to back for ``seconds`` (at least 20 times); each one's duration."""
    out: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or len(out) < 20:
        started = time.perf_counter()
        await probe()
        out.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)
    return out


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def assert_within_twice(before: list[float], during: list[float]) -> None:
    """The honest client's p90 during an attack is within 2x of before it (with a
    5 ms floor, below which a loaded machine's scheduling is the noise)."""
    limit = 2 * max(p90(before), 0.005)
    assert p90(during) <= limit, f"p90 {p90(during) * 1e3:.1f} ms > {limit * 1e3:.1f} ms"


async def honest_client(
    server: ServerProcess, doc: str
) -> tuple[RawClient, Callable[[], Awaitable[None]]]:
    """Alice, joined to ``doc`` on ``/collab``, and a probe: one ping and its pong."""
    honest = await RawClient.connect(server, f"token={token('alice')}&doc={doc}")
    await honest.expect("snapshot")
    ids = itertools.count()

    async def ping() -> None:
        await honest.send({"type": "ping", "id": next(ids)})
        await honest.expect("pong")

    return honest, ping


def write_big_document(server: ServerProcess, doc: str = "big") -> None:
    """Give ``doc`` about 400 KB of text, through REST as a writer."""
    answer = httpx.post(
        f"{server.url}/api/docs/{doc}/ops",
        json={"type": "insert", "pos": 0, "text": "tandem " * 57_000},
        headers={"Authorization": f"Bearer {token('writer')}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text


def spawn_attackers(
    server: ServerProcess, seconds: float, kinds: Iterable[tuple[str, int]]
) -> list[subprocess.Popen[str]]:
    """One ``tests.adversarial.attackers`` process per ``(kind, n)``, each attacking
    for ``seconds`` and printing its counts as JSON when done."""
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.adversarial.attackers",
                kind,
                str(server.port),
                str(seconds),
                str(n),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        for kind, n in kinds
    ]


class Mute:
    """A WebSocket client that writes and never reads: the slow consumer at its worst.

    A plain socket with a small receive buffer does the handshake by hand, then
    only sends masked frames. ``cut`` tells whether the server has cut it.
    """

    def __init__(self, port: int, path: str, *, headers: dict[str, str] | None = None) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        self.status = int(head.split(b" ", 2)[1])

    def send(self, payload: bytes, *, text: bool = True) -> None:
        mask = os.urandom(4)
        size = len(payload)
        header = bytes([0x81 if text else 0x82])
        if size < 126:
            header += bytes([0x80 | size])
        elif size < 1 << 16:
            header += bytes([0x80 | 126]) + size.to_bytes(2, "big")
        else:
            header += bytes([0x80 | 127]) + size.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def cut(self, within: float) -> bool:
        """Has the server reset or closed this socket within ``within`` seconds, while
        it reads nothing? Reading would drain what the server sent and let a graceful
        close through; the TCP state shows whether the server let go of what the
        client never read (a reset), or left it to the kernel to deliver forever.
        """
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != ESTABLISHED:
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        self.sock.close()


def metric(server: ServerProcess, name: str) -> float:
    """A metric's value summed over its series, from ``/metrics``."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def peak_rss(pid: int, seconds: float) -> int:
    """The highest ``VmRSS`` seen over ``seconds`` (sampled every 50 ms)."""
    peak = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, rss(pid))
        time.sleep(0.05)
    return peak

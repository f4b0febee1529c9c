"""Real servers and raw JSON clients for the integration tests.

``ServerProcess`` runs ``tandem serve`` in a subprocess on a free port (the
real CLI, real uvicorn, real storage) and can SIGKILL and restart it on the
same data. ``RawClient`` speaks the JSON protocol over a real WebSocket, with
no client library in between, and unpacks server batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets
from websockets.asyncio.client import ClientConnection

SECRET = "integration-test-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """``tandem serve`` as a child process."""

    def __init__(
        self,
        data_dir: Path,
        *,
        env: dict[str, str] | None = None,
        log_level: str = "warning",
        args: tuple[str, ...] = (),
        module: str = "tandem",
    ) -> None:
        self.data_dir = data_dir
        #: The module ``python -m`` runs (``tandem``, or a wrapper that serves it).
        self.module = module
        self.log_level = log_level
        self.args = args
        self.port = free_port()
        # Bulk-writing tests send thousands of ops quickly; the rate limit has its own test.
        self.env = {
            **os.environ,
            "TANDEM_JWT_SECRET": SECRET,
            "TANDEM_MESSAGE_BURST": "100000",
            **(env or {}),
        }
        self.process: subprocess.Popen[str] | None = None
        self.output = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> float:
        """Start and wait until /healthz answers; returns the seconds it took."""
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                self.module,
                "serve",
                "--port",
                str(self.port),
                "--data",
                str(self.data_dir),
                "--log-level",
                self.log_level,
                *self.args,
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                out = self.process.stdout.read() if self.process.stdout else ""
                raise RuntimeError(f"server exited early ({self.process.returncode}):\n{out}")
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        # Not left running: the fixture that called start() has no process to stop yet.
        self.kill()
        raise TimeoutError(f"server did not become healthy in {timeout} s:\n{self.output}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self._collect()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._collect()

    def _collect(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            with contextlib.suppress(Exception):
                self.output += self.process.stdout.read()
            self.process.stdout.close()
        self.process = None


def token(
    user: str = "alice", docs: dict[str, str] | None = None, ttl: int = 3600, **claims: Any
) -> str:
    """A valid token (``ttl`` > 0); ``expired_token`` makes an honestly expired one."""
    import jwt

    if ttl <= 0:
        raise ValueError("use expired_token(): exp before iat is refused by another check")
    now = int(time.time())
    payload = {
        "sub": user,
        "name": user.title(),
        "iat": now,
        "exp": now + ttl,
        "docs": docs if docs is not None else {"*": "write"},
        **claims,
    }
    return jwt.encode(payload, SECRET, algorithm="HS256")


def expired_token(user: str = "alice", docs: dict[str, str] | None = None) -> str:
    """A token that is well formed in every way but expired: issued an hour ago, ``exp``
    a minute ago (well past the 5 s leeway) and after ``iat``, so only the ``exp`` check
    can refuse it."""
    now = int(time.time())
    return token(user, docs, iat=now - 3600, exp=now - 60)


class RawClient:
    """A bare JSON WebSocket client with a message inbox (batches unpacked)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.inbox: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, server: ServerProcess, query: str = "", **kw: Any) -> RawClient:
        ws = await websockets.connect(f"{server.ws_url}/collab?{query}", max_size=None, **kw)
        return cls(ws)

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else orjson.dumps(message).decode())

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        while not self.inbox:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
            data = orjson.loads(raw)
            self.inbox.extend(data if isinstance(data, list) else [data])
        return self.inbox.pop(0)

    async def expect(self, kind: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """The next message of ``kind`` (matching ``match``), skipping presence chatter."""
        deadline = time.monotonic() + timeout
        while True:
            message = await self.next(max(0.01, deadline - time.monotonic()))
            if message.get("type") == kind and all(message.get(k) == v for k, v in match.items()):
                return message
            if message.get("type") not in (
                "presence",
                "op",
                "hello",
                "ack",
                "pong",
                "token_expiring",
            ):
                raise AssertionError(f"expected {kind}, got {message}")

    async def close(self) -> None:
        await self.ws.close()


async def doc_state(server: ServerProcess, doc: str, who: str | None = None) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{server.url}/api/docs/{doc}",
            headers={"Authorization": f"Bearer {who or token('reader')}"},
        )
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


async def doc_ops(server: ServerProcess, doc: str, start: int = 0) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    async with httpx.AsyncClient() as http:
        while True:
            response = await http.get(
                f"{server.url}/api/docs/{doc}/ops",
                params={"from": start, "limit": 10_000},
                headers={"Authorization": f"Bearer {token('reader')}"},
            )
            response.raise_for_status()
            page = response.json()
            ops.extend(page["ops"])
            if not page["ops"] or page["ops"][-1]["v"] >= page["v"]:
                return ops
            start = page["ops"][-1]["v"]


POSTGRES_URL = os.environ.get(
    "TANDEM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TANDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``check`` every 20 ms until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def require_services(*names: str) -> None:
    """Skip (or, under CI=true, fail) unless PostgreSQL / Redis answer."""
    import pytest

    ports = {"postgres": 5432, "redis": 6379}
    missing = []
    for name in names:
        try:
            socket.create_connection(("127.0.0.1", ports[name]), timeout=1).close()
        except OSError as exc:
            missing.append(f"{name} on 127.0.0.1:{ports[name]} ({exc})")
    if missing:
        reason = "not reachable: " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)


def cluster_env(tag: str) -> dict[str, str]:
    """PostgreSQL + Redis settings isolated to one test (own schema, own channel prefix)."""
    return {
        "TANDEM_DATABASE_URL": f"{POSTGRES_URL}?schema=t_{tag}",
        "TANDEM_REDIS_URL": f"{REDIS_URL}?prefix=t{tag}:",
    }


def drop_schema(tag: str) -> None:
    import asyncio

    import asyncpg  # type: ignore[import-untyped]

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "t_{tag}" CASCADE')
        finally:
            await conn.close()

    # Callable from sync tests and from inside a running event loop alike.
    import threading

    thread = threading.Thread(target=asyncio.run, args=(drop(),))
    thread.start()
    thread.join(30)


#: Document leases short enough for a failover test to wait out (operations.md).
SHORT_LEASE = {"TANDEM_LEASE_TTL": "2", "TANDEM_LEASE_RENEW_INTERVAL": "0.5"}


def metric(server: ServerProcess, name: str) -> float:
    """The sum of every sample of the Prometheus metric ``name`` on ``server``."""
    import re

    text = httpx.get(server.url + "/metrics", timeout=5).text
    pattern = rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$"
    return sum(float(value) for value in re.findall(pattern, text, re.M))


@contextlib.contextmanager
def three_nodes(data: Path, env: dict[str, str] | None = None) -> Iterator[list[ServerProcess]]:
    """Three ``tandem serve`` nodes on one isolated PostgreSQL schema and Redis prefix.

    ``env`` adds settings for every node (a ``TANDEM_REDIS_URL`` replaces the
    shared Redis). Skips (fails under CI=true) without PostgreSQL and Redis;
    stops every node and drops the schema afterwards. When the body raises, each
    node's log (warnings and up) is printed, so the failure shows why.
    """
    require_services("postgres", "redis")
    tag = uuid.uuid4().hex[:10]
    common = {**cluster_env(tag), **SHORT_LEASE, **(env or {})}
    nodes = [
        ServerProcess(data / f"n{i}", env={**common, "TANDEM_NODE_ID": f"n{i}"}) for i in range(3)
    ]
    failed = False
    try:
        for node in nodes:
            node.start()
        yield nodes
    except BaseException:
        failed = True
        raise
    finally:
        for node in nodes:
            node.stop()
        if failed:
            for i, node in enumerate(nodes):
                print(f"--- node n{i} log (last 8000 characters) ---\n{node.output[-8000:]}")
        drop_schema(tag)


class RedisServer:
    """A ``redis-server`` of this test's own, on its own port, that it may kill."""

    def __init__(self, *args: str) -> None:
        import pytest

        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI") == "true":
                pytest.fail("CI=true and no redis-server on PATH", pytrace=False)
            pytest.skip("no redis-server on PATH")
        self.binary = binary
        self.port = free_port()
        self.args = list(args)  # more redis-server options (``--requirepass``, ...)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

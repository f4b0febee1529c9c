"""Probes against real outages: ``/livez``, ``/readyz`` and ``/healthz``.

* Redis is really killed (SIGKILL of a ``redis-server`` this test started on its
  own port; the shared one is left alone) under a node on PostgreSQL + Redis:
  ``/readyz`` and ``/livez`` answer 200 at every sample throughout, the node
  keeps acknowledging edits, and ``/healthz`` shows the bus down (503), then
  up again once Redis is back.
* The node's PostgreSQL connection is really cut (a TCP relay between them is
  closed): ``/readyz`` answers 503 while ``/livez`` stays 200, and both recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tandem.client import TandemClient
from tandem.server.health import readiness

from .harness import (
    POSTGRES_URL,
    RedisServer,
    ServerProcess,
    drop_schema,
    free_port,
    require_services,
    token,
)

pytestmark = [pytest.mark.integration]


class Sampler:
    """Polls URLs from a thread every 50 ms and keeps every status code."""

    def __init__(self, *urls: str) -> None:
        self.urls = urls
        self.codes: dict[str, list[int]] = {url: [] for url in urls}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                for url in self.urls:
                    try:
                        self.codes[url].append(http.get(url).status_code)
                    except httpx.HTTPError:
                        self.codes[url].append(0)
                time.sleep(0.05)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def status(url: str) -> int:
    return httpx.get(url, timeout=5).status_code


def wait_for(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture
def schema() -> Iterator[str]:
    require_services("postgres")
    tag = uuid.uuid4().hex[:10]
    try:
        yield tag
    finally:
        drop_schema(tag)


async def edit(node: ServerProcess, text: str) -> None:
    """An edit acknowledged by ``node`` (within 10 s)."""
    client = TandemClient(f"{node.ws_url}/collab", token("probe"))
    try:
        handle = await client.join("health", 10)
        handle.insert(0, text)
        await handle.synced(10)
    finally:
        await client.close()


def test_readyz_and_livez_stay_200_while_redis_is_down(tmp_path: Path, schema: str) -> None:
    redis = RedisServer()
    redis.start()
    node = ServerProcess(
        tmp_path / "node",
        env={
            "TANDEM_DATABASE_URL": f"{POSTGRES_URL}?schema=t_{schema}",
            "TANDEM_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0?prefix=t{schema}:",
        },
    )
    node.start()
    try:
        live, ready, health = (f"{node.url}/{path}" for path in ("livez", "readyz", "healthz"))
        assert status(ready) == 200 and status(health) == 200
        with Sampler(live, ready) as sampler:
            redis.kill()
            wait_for(lambda: status(health) == 503)
            assert httpx.get(health).json()["bus"] == "error: disconnected"
            asyncio.run(edit(node, "served without Redis "))
            time.sleep(1.0)  # keep sampling the probes while Redis stays down
            redis.start()
            wait_for(lambda: status(health) == 200)
        assert len(sampler.codes[ready]) > 10
        assert set(sampler.codes[ready]) == {200}, sampler.codes[ready]
        assert set(sampler.codes[live]) == {200}, sampler.codes[live]
        asyncio.run(edit(node, "and with it "))
    finally:
        node.stop()
        redis.kill()


class Relay:
    """A TCP relay from a local port to ``target``; ``cut()`` closes it and every
    connection through it, ``restore()`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)  # type: ignore[arg-type]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self._call(self._listen())

    def cut(self) -> None:
        self._call(self._cut())

    async def _cancel_all(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        self.cut()
        self._call(self._cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def test_readyz_fails_while_storage_is_cut_and_livez_does_not(tmp_path: Path, schema: str) -> None:
    parts = urlsplit(POSTGRES_URL)
    relay = Relay((parts.hostname or "127.0.0.1", parts.port or 5432))
    relay.restore()
    netloc = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
    via_relay = urlunsplit(parts._replace(netloc=f"{netloc}:{relay.port}"))
    node = ServerProcess(
        tmp_path / "node", env={"TANDEM_DATABASE_URL": f"{via_relay}?schema=t_{schema}"}
    )
    node.start()
    try:
        live, ready = f"{node.url}/livez", f"{node.url}/readyz"
        assert status(ready) == 200
        relay.cut()
        wait_for(lambda: status(ready) == 503)
        assert httpx.get(ready).json()["status"].startswith("not ready: storage error")
        assert status(live) == 200
        relay.restore()
        wait_for(lambda: status(ready) == 200)
        asyncio.run(edit(node, "storage is back "))
    finally:
        node.stop()
        relay.close()


def test_readiness_decision() -> None:
    ok = {"started": True, "draining": False, "storage": "ok", "bus": "ok"}
    assert readiness(**ok, bus_required=False) is None  # type: ignore[arg-type]
    assert readiness(**{**ok, "bus": "error: disconnected"}, bus_required=False) is None  # type: ignore[arg-type]
    assert readiness(**{**ok, "bus": "error: disconnected"}, bus_required=True) == (  # type: ignore[arg-type]
        "bus error: disconnected"
    )
    assert readiness(**{**ok, "storage": "error: OSError"}, bus_required=False)  # type: ignore[arg-type]
    assert readiness(**{**ok, "started": False}, bus_required=False) == "starting"  # type: ignore[arg-type]
    assert readiness(**{**ok, "draining": True}, bus_required=False) == "shutting down"  # type: ignore[arg-type]

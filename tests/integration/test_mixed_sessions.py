"""Randomized mixed sessions: OT clients and Yjs clients on one document converge.

The real server app runs in this process on uvicorn (a free 127.0.0.1 port).
Several ``TandemClient``s (``/collab``) and several pycrdt Yjs clients
(``/yjs/{doc}``, tests/integration/yclient.py) insert unique tokens (some with
astral characters, some bold/italic), delete whole tokens, format random
ranges, and drop and restore their connections (Yjs clients keep editing
offline), all at random moments. Once everyone is back and quiet, every
client's text *and* formatting must equal the server's (``GET /api/docs/{id}``),
and every inserted token must appear exactly once unless it was deleted.

Seeded: the seed is printed. ``TANDEM_MIXED_SEEDS=n`` runs n more seeds (from
``TANDEM_MIXED_SEED_BASE``, default 1000); ``TANDEM_MIXED_STEPS`` sets the steps.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from tandem import Settings
from tandem.client import TandemClient
from tandem.client.document import DocumentHandle
from tandem.merge.replica import carries_formats
from tandem.merge.translate import apply_to_text
from tandem.merge.updates import holds_formats
from tandem.ot.delta import Delta
from tandem.server.app import Tandem
from tandem.session.stored_replica import build_replica

from .yclient import YClient
from .ystructs import canonical

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SECRET = "mixed-session-secret-0123456789abcdef"
DOC = "mixed"
TOKEN = re.compile(r"‹[^›]*›")
ASTRAL = ["", "", "😀", "𝔸", "é"]
STYLES: list[dict[str, Any] | None] = [
    None,
    None,
    {"bold": True},
    {"italic": True},
    {"bold": True, "italic": True},
]
FORMATS: list[dict[str, Any]] = [
    {"bold": True},
    {"italic": True},
    {"bold": None},
    {"italic": None},
    {"bold": True, "italic": True},
    {"bold": None, "italic": None},
]

_EXTRA = int(os.environ.get("TANDEM_MIXED_SEEDS", "0"))
_BASE = int(os.environ.get("TANDEM_MIXED_SEED_BASE", "1000"))
SEEDS = [1, 2, 3] + list(range(_BASE, _BASE + _EXTRA))
STEPS = int(os.environ.get("TANDEM_MIXED_STEPS", "120"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def serving(tandem: Tandem) -> AsyncIterator[str]:
    """The whole Tandem app on a real uvicorn server in this process; yields host:port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = FastAPI(lifespan=tandem.lifespan)
    app.include_router(tandem.router)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def tokens_in(delta_or_text: str) -> list[str]:
    return TOKEN.findall(delta_or_text)


def boundaries(text: str) -> list[int]:
    """Code-point indexes between tokens (inserting there never splits a token)."""
    spots = [0]
    for match in TOKEN.finditer(text):
        spots.append(match.end())
    return spots


class Session:
    """The clients of one seeded run and what they did."""

    def __init__(self, rng: random.Random, host: str, tandem: Tandem) -> None:
        self.rng = rng
        self.host = host
        self.tandem = tandem
        self.inserted: list[str] = []
        self.deleted: set[str] = set()
        self.ot: list[tuple[TandemClient, DocumentHandle]] = []
        self.y: list[YClient] = []
        self.y_online: list[bool] = []
        self.counter = 0

    def yurl(self, who: str) -> str:
        jwt = self.tandem.authenticator.issue(who, docs={"*": "write"}, now=time.time())
        return f"ws://{self.host}/yjs/{DOC}?token={jwt}"

    async def open(self, n_ot: int, n_y: int) -> None:
        for i in range(n_ot):
            jwt = self.tandem.authenticator.issue(f"ot{i}", docs={"*": "write"}, now=time.time())
            client = TandemClient(
                f"ws://{self.host}/collab",
                jwt,
                initial_backoff=0.01,
                max_backoff=0.1,
                rng=random.Random(self.rng.random()),
            )
            handle = await client.join(DOC, timeout=10)
            self.ot.append((client, handle))
        for i in range(n_y):
            y = YClient(1000 + i)
            await y.connect(self.yurl(f"y{i}"))
            await asyncio.wait_for(y.synced.wait(), 10)
            self.y.append(y)
            self.y_online.append(True)

    def token(self, who: str) -> str:
        self.counter += 1
        token = f"‹{who}.{self.counter}{self.rng.choice(ASTRAL)}›"
        self.inserted.append(token)
        return token

    # -- one random action --------------------------------------------------------

    async def step(self) -> None:
        rng = self.rng
        if rng.random() < 0.5:
            await self.ot_step(rng.randrange(len(self.ot)))
        else:
            await self.y_step(rng.randrange(len(self.y)))

    async def ot_step(self, i: int) -> None:
        rng = self.rng
        client, handle = self.ot[i]
        roll = rng.random()
        if roll < 0.05:
            await client.disconnect()  # it reconnects by itself, edits stay buffered
            return
        text = handle.text
        if roll < 0.55 or not tokens_in(text):
            handle.insert(rng.choice(boundaries(text)), self.token(f"o{i}"), rng.choice(STYLES))
        elif roll < 0.75:
            match = rng.choice(list(TOKEN.finditer(text)))
            self.deleted.add(match.group())
            handle.delete(match.start(), match.end() - match.start())
        else:
            a = rng.randrange(len(text))
            b = rng.randrange(a, len(text)) + 1
            handle.format(a, b - a, rng.choice(FORMATS))

    async def y_step(self, i: int) -> None:
        rng = self.rng
        y = self.y[i]
        roll = rng.random()
        if roll < 0.06:
            if self.y_online[i]:
                await y.disconnect()
                self.y_online[i] = False
            else:
                await self.reconnect(i)
            return
        text = y.plain()
        if roll < 0.55 or not tokens_in(text):
            at, token = rng.choice(boundaries(text)), self.token(f"y{i}")
            y.insert(at, token, rng.choice(STYLES))
            placed = y.plain()
            assert placed[at : at + len(token)] == token and len(placed) == len(text) + len(
                token
            ), f"pycrdt misplaced a local insert at {at} of {token} into {text!r}: {placed!r}"
        elif roll < 0.75:
            match = rng.choice(list(TOKEN.finditer(text)))
            self.deleted.add(match.group())
            y.delete(match.start(), match.end() - match.start())
        else:
            a = rng.randrange(len(text))
            b = rng.randrange(a, len(text)) + 1
            y.format(a, b - a, rng.choice(FORMATS))

    async def reconnect(self, i: int) -> None:
        y = self.y[i]
        await y.connect(self.yurl(f"y{i}"))
        await asyncio.wait_for(y.synced.wait(), 10)
        self.y_online[i] = True

    # -- the end ------------------------------------------------------------------

    async def settle(self) -> None:
        for i, online in enumerate(self.y_online):
            if not online:
                await self.reconnect(i)
        for client, handle in self.ot:
            await client.connect(10)
            await handle.synced(20)

    async def server_content(self) -> Delta:
        jwt = self.tandem.authenticator.issue("checker", docs={"*": "read"}, now=time.time())
        async with httpx.AsyncClient() as http:
            response = await http.get(
                f"http://{self.host}/api/docs/{DOC}", headers={"Authorization": f"Bearer {jwt}"}
            )
            response.raise_for_status()
            data: dict[str, Any] = response.json()
        return Delta.from_json(data["content"])

    async def first_broken_op(self) -> str:
        """Replay the server's op log; describe the first op after which a token is split."""
        jwt = self.tandem.authenticator.issue("checker", docs={"*": "read"}, now=time.time())
        async with httpx.AsyncClient() as http:
            response = await http.get(
                f"http://{self.host}/api/docs/{DOC}/ops",
                params={"from": 0, "limit": 10_000},
                headers={"Authorization": f"Bearer {jwt}"},
            )
            response.raise_for_status()
            ops: list[dict[str, Any]] = response.json()["ops"]
        text = ""
        for record in ops:
            before = text
            text = apply_to_text(text, Delta.from_json(record["op"]))
            if "".join(tokens_in(text)) != text:
                return f"v{record['v']} by {record.get('user')}: {record['op']} on {before!r}"
        return "no op splits a token"

    def views(self) -> dict[str, Delta]:
        views = {f"ot{i}": handle.content for i, (_, handle) in enumerate(self.ot)}
        views.update({f"y{i}": y.content() for i, y in enumerate(self.y)})
        return views

    async def converged(self, timeout: float = 20.0) -> Delta:
        deadline = time.monotonic() + timeout
        while True:
            server = await self.server_content()
            views = self.views()
            if all(view == server for view in views.values()):
                return server
            if time.monotonic() > deadline:
                lines = [f"server: {server.to_json()}"]
                lines += [f"{name}: {view.to_json()}" for name, view in views.items()]
                raise AssertionError("clients did not converge:\n" + "\n".join(lines))
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for client, _ in self.ot:
            await client.close()
        for y in self.y:
            await y.disconnect()


async def run_session(seed: int, data_dir: Path, steps: int = STEPS) -> None:
    print(f"mixed session seed={seed} steps={steps}")
    rng = random.Random(seed)
    tandem = Tandem(
        Settings(
            data_dir=data_dir,
            jwt_secret=SECRET,
            message_burst=100_000,
            messages_per_second=100_000.0,
            snapshot_every=rng.choice([5, 20, 100]),
        )
    )
    async with serving(tandem) as host:
        session = Session(rng, host, tandem)
        try:
            await session.open(n_ot=3, n_y=3)
            for _ in range(steps):
                await session.step()
                if rng.random() < 0.3:
                    await asyncio.sleep(rng.random() * 0.02)
            await session.settle()
            final = await session.converged()
            text = "".join(getattr(part, "text", "") for part in final.ops)
            found = tokens_in(text)
            if "".join(found) != text:
                culprit = await session.first_broken_op()
                raise AssertionError(f"seed {seed}: a token was split: {culprit}\n{text!r}")
            counts: dict[str, int] = {}
            for token in found:
                counts[token] = counts.get(token, 0) + 1
            for token in session.inserted:
                want = 0 if token in session.deleted else 1
                assert counts.get(token, 0) == want, (
                    f"seed {seed}: {token} appears {counts.get(token, 0)}×, expected {want}"
                )
            assert set(counts) <= set(session.inserted)
            await same_items_after_a_reload(tandem)
        finally:
            await session.close()


async def same_items_after_a_reload(tandem: Tandem) -> None:
    """The replica rebuilt from the store (a restart, another node) is byte-identical."""
    live = tandem.documents.sessions[DOC]
    await tandem.documents.committer.drain()
    replica = await live.replicas.ready()
    loaded = await tandem.store.load(DOC)
    assert loaded.version == replica.version
    # Only an op without attributes, on a replica that never held formatting, may be
    # stored without its update (its delta then replays to the same items).
    snapshot = loaded.snapshot
    formatted = snapshot is not None and bool(snapshot.crdt) and holds_formats(snapshot.crdt)
    for record in loaded.ops:
        if record.crdt is None:
            assert not formatted and not carries_formats(record.op), f"v{record.version}"
        formatted = formatted or carries_formats(record.op)
        formatted = formatted or (record.crdt is not None and holds_formats(record.crdt))
    rebuilt = build_replica(loaded)
    assert rebuilt.content() == replica.content()
    # Raw bytes list clients in hash-map order: compare the decoded items.
    assert canonical(rebuilt.state()) == canonical(replica.state())


@pytest.mark.parametrize("seed", SEEDS)
async def test_mixed_ot_and_yjs_sessions_converge(seed: int, tmp_path: Path) -> None:
    await run_session(seed, tmp_path / "data")

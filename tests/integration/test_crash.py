"""SIGKILL the server under write load, restart it, and find every acknowledged op.

Writers insert unique tokens (``<client:seq>``) with one op in flight each, the
way real clients do. Between kills the server restarts on the same data and
the writers reconnect and resubmit their in-flight op with its original
``seq``. At the end every acknowledged token is in the document exactly once,
every resubmitted token at most once, and the op log has no gaps. So is every
token another writer was sent as an ``op``: an op is broadcast only once it is
committed, which a crash of the process does not undo (its fsync, which the
ack waits for, guards against a power loss, which this test cannot make).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from pathlib import Path

import pytest
import websockets

from .harness import RawClient, ServerProcess, doc_ops, doc_state, token

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

DOC = "crash"


class Writer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.seq = 0
        self.inflight: dict[str, object] | None = None
        self.acked: dict[int, int] = {}  # seq -> version
        #: Markers of the other writers' ops this one was sent.
        self.seen: set[str] = set()

    def next_op(self) -> dict[str, object]:
        if self.inflight is None:
            self.seq += 1
            self.inflight = {
                "type": "insert",
                "doc": DOC,
                "pos": 0,
                "seq": self.seq,
                "text": f"<{self.name}:{self.seq}>",
            }
        return self.inflight

    async def run(self, server: ServerProcess, stop: asyncio.Event) -> None:
        """Write until the connection dies or ``stop`` is set."""
        try:
            client = await RawClient.connect(
                server, f"token={token(self.name)}&client={self.name}&doc={DOC}"
            )
        except (OSError, websockets.WebSocketException):
            return
        try:
            await client.expect("snapshot")
            while not stop.is_set():
                op = self.next_op()
                await client.send(op)
                ack = await self.ack_of(client, op["seq"])
                self.acked[int(op["seq"])] = ack["v"]  # type: ignore[call-overload]
                self.inflight = None
        except (OSError, websockets.WebSocketException, TimeoutError, AssertionError):
            return
        finally:
            await client.ws.close()

    async def ack_of(self, client: RawClient, seq: object) -> dict[str, object]:
        """Wait for the ack of ``seq``, noting the other writers' ops on the way."""
        while True:
            message = await client.next()
            if message.get("type") == "op":
                self.seen.add(f"<{message['client']}:{message['seq']}>")
            elif message.get("type") == "ack" and message.get("seq") == seq:
                return message


async def crash_cycles(tmp_path: Path, kills: int, env: dict[str, str] | None = None) -> int:
    seed = int(os.environ.get("TANDEM_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"crash test seed={seed}")
    server = ServerProcess(tmp_path / "data", env=env)
    writers = [Writer(f"w{i}") for i in range(4)]
    try:
        for _ in range(kills):
            server.start()
            stop = asyncio.Event()
            tasks = [asyncio.create_task(w.run(server, stop)) for w in writers]
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            server.kill()  # SIGKILL mid-load: acks may be in flight
            stop.set()
            await asyncio.gather(*tasks)
        server.start()
        # Reconnect once more so every writer resubmits what it had in flight.
        stop = asyncio.Event()
        for writer in writers:
            if writer.inflight is not None:
                client = await RawClient.connect(
                    server, f"token={token(writer.name)}&client={writer.name}&doc={DOC}"
                )
                await client.expect("snapshot")
                await client.send(writer.inflight)
                ack = await client.expect("ack", seq=writer.inflight["seq"])
                writer.acked[int(writer.inflight["seq"])] = ack["v"]  # type: ignore[call-overload]
                writer.inflight = None
                await client.close()
        text = (await doc_state(server, DOC))["text"]
        ops = await doc_ops(server, DOC)
        counts: dict[str, int] = {}
        for found in re.findall(r"<w\d+:\d+>", text):
            counts[found] = counts.get(found, 0) + 1
        acked_total = 0
        for writer in writers:
            for seq in writer.acked:
                marker = f"<{writer.name}:{seq}>"
                assert counts.get(marker) == 1, (
                    f"seed={seed}: acked {marker} seen {counts.get(marker)}x"
                )
                acked_total += 1
        assert all(n == 1 for n in counts.values()), f"seed={seed}: duplicated ops"
        assert sum(len(writer.seen) for writer in writers) > 50, "too few broadcasts seen"
        for writer in writers:
            lost = sorted(marker for marker in writer.seen if marker not in counts)
            assert not lost, f"seed={seed}: {writer.name} was sent {lost}, then they were lost"
        assert [o["v"] for o in ops] == list(range(1, len(ops) + 1)), "gap in the op log"
        by_seq = {(o["client"], o["seq"]): o["v"] for o in ops}
        for writer in writers:
            for seq, version in writer.acked.items():
                assert by_seq[(writer.name, seq)] == version, f"seed={seed}: ack version mismatch"
        return acked_total
    finally:
        server.stop()


async def test_sigkill_under_load_loses_no_acknowledged_op_sqlite(tmp_path: Path) -> None:
    acked = await crash_cycles(tmp_path, kills=int(os.environ.get("TANDEM_CRASH_KILLS", "20")))
    assert acked > 50


async def test_sigkill_under_load_loses_no_acknowledged_op_postgres(tmp_path: Path) -> None:
    import uuid

    from .harness import POSTGRES_URL, drop_schema, require_services

    require_services("postgres")
    tag = uuid.uuid4().hex[:10]
    try:
        acked = await crash_cycles(
            tmp_path,
            kills=int(os.environ.get("TANDEM_CRASH_KILLS", "20")),
            env={"TANDEM_DATABASE_URL": f"{POSTGRES_URL}?schema=t_{tag}"},
        )
        assert acked > 50
    finally:
        drop_schema(tag)

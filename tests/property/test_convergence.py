"""Seeded multi-client simulation: one server, several clients, random network delays.

Three parts, kept apart so the in-test server and client can later be swapped
for ``tandem.sequencer`` and ``tandem.client.state``:

* ``MiniServer``: a pure sequencer loop (history of committed ops; ``submit``
  transforms an op against ``history[base_version:]`` one by one, side "right");
* ``MiniClient``: the three-state client of ot.js (synchronized / awaiting ack /
  awaiting ack with a buffer);
* ``simulate``: the driver. It only talks to the two through the small
  ``Sequencer`` and ``ClientState`` protocols below, and owns the network: one
  FIFO channel each way per client, each message delayed by a random time.

Every run must end with every client's document equal to the server's, nothing
left in flight, and every edit committed exactly once (in runs without deletes,
every inserted marker character present exactly once).

Replay one run with ``TANDEM_SIM_SEED=<seed> pytest tests/property/test_convergence.py``.
"""

from __future__ import annotations

import heapq
import os
import random
from dataclasses import dataclass, field
from typing import Protocol

import pytest

from tandem.ot import Delta, Document, apply, compose, from_simple, transform

from .seeds import with_fresh_seeds

# -- the two parts a colleague will replace --------------------------------------------


class Sequencer(Protocol):
    document: Document

    @property
    def version(self) -> int: ...

    def submit(self, base_version: int, op: Delta) -> tuple[int, Delta]:
        """Commit ``op`` made on ``base_version``; return (new version, op as committed)."""
        ...


class ClientState(Protocol):
    document: Document
    version: int

    def edit(self, op: Delta) -> Delta | None:
        """Apply a local edit; return the op to send now, if any."""
        ...

    def on_ack(self) -> Delta | None:
        """Our in-flight op was committed; return the next op to send, if any."""
        ...

    def on_remote(self, op: Delta) -> None:
        """Another client's committed op arrived."""
        ...

    def idle(self) -> bool:
        """Nothing in flight and nothing buffered."""
        ...


class MiniServer:
    """The smallest server-side sequencer: one linear history, transform to head."""

    def __init__(self, document: Document) -> None:
        self.document = document
        self.history: list[Delta] = []

    @property
    def version(self) -> int:
        return len(self.history)

    def submit(self, base_version: int, op: Delta) -> tuple[int, Delta]:
        if not 0 <= base_version <= self.version:
            raise ValueError(f"bad base version {base_version} (head is {self.version})")
        # Step by step, never against a composition of the missed ops (algorithms.md §3).
        for committed in self.history[base_version:]:
            op = transform(op, committed, "right")
        self.document = apply(self.document, op)
        self.history.append(op)
        return self.version, op


class MiniClient:
    """ot.js's client: at most one op in flight; local edits meanwhile composed into a buffer."""

    def __init__(self, document: Document, version: int) -> None:
        self.document = document
        self.version = version
        self.inflight: Delta | None = None
        self.buffer: Delta | None = None

    def idle(self) -> bool:
        return self.inflight is None and self.buffer is None

    def edit(self, op: Delta) -> Delta | None:
        self.document = apply(self.document, op)
        if self.inflight is None:  # synchronized -> awaiting ack
            self.inflight = op
            return op
        # awaiting ack (with buffer)
        self.buffer = op if self.buffer is None else compose(self.buffer, op)
        return None

    def on_ack(self) -> Delta | None:
        if self.inflight is None:
            raise RuntimeError("ack without an op in flight")
        self.version += 1
        self.inflight, self.buffer = self.buffer, None
        return self.inflight

    def on_remote(self, op: Delta) -> None:
        # The remote op was committed after everything we have seen, but before our
        # in-flight op (the server acks in order). Walk the same diamond the server
        # walks: it computes inflight' = T(inflight, remote, "right"); we apply
        # remote' = T(remote, inflight, "left") after our own edits (TP1).
        #
        #                 ●  base
        #      inflight  / \  remote
        #               ●   ●
        #     remote'    \ /  inflight'
        #                 ●
        #       buffer   / \  remote'
        #               ●   ●
        #     remote''   \ /  buffer'
        #                 ●
        #
        # and the buffer, which the server has not seen yet, moves over remote' the
        # same way; what we apply locally is remote''.
        if self.inflight is not None:
            self.inflight, op = (
                transform(self.inflight, op, "right"),
                transform(op, self.inflight, "left"),
            )
        if self.buffer is not None:
            self.buffer, op = (
                transform(self.buffer, op, "right"),
                transform(op, self.buffer, "left"),
            )
        self.document = apply(self.document, op)
        self.version += 1


# -- the driver ----------------------------------------------------------------------------

MARKERS = [chr(0x4E00 + i) for i in range(20_000)]  # one unique character per insert
FILLER = ("a", "b", " ", "😀", "𝄞", "é")
NAMES = ("bold", "italic", "color")
VALUES: tuple[object, ...] = (True, 1, "red", None)


@dataclass
class Run:
    seed: int
    clients: int
    edits_per_client: int
    allow_delete: bool
    markers_inserted: list[str] = field(default_factory=list)
    sent: int = 0


def random_edit(rng: random.Random, document: Document, run: Run) -> Delta:
    """An insert (with a unique marker), a delete or a format, as a simple message."""
    length = len(document)
    roll = rng.random()
    if length == 0 or roll < 0.5 or (not run.allow_delete and roll < 0.75):
        marker = MARKERS[len(run.markers_inserted)]
        run.markers_inserted.append(marker)
        text = marker + "".join(rng.choice(FILLER) for _ in range(rng.randint(0, 3)))
        message: dict[str, object] = {"type": "insert", "pos": rng.randint(0, length), "text": text}
        if rng.random() < 0.3:
            message["attributes"] = {rng.choice(NAMES): rng.choice(VALUES[:-1])}
        return from_simple(message)
    pos = rng.randint(0, length - 1)
    span = rng.randint(1, min(4, length - pos))
    if roll < 0.75:
        return from_simple({"type": "delete", "pos": pos, "length": span})
    attributes = {rng.choice(NAMES): rng.choice(VALUES)}
    return from_simple({"type": "format", "pos": pos, "length": span, "attributes": attributes})


def simulate(
    run: Run,
    make_server: type[MiniServer] = MiniServer,
    make_client: type[MiniClient] = MiniClient,
) -> tuple[Sequencer, list[ClientState]]:
    """Run one seeded session to quiescence and return the server and the clients."""
    rng = random.Random(run.seed)
    start = Document(Delta().insert("hello 😀 world", {"bold": True}).insert("\n"))
    server: Sequencer = make_server(start)
    clients: list[ClientState] = [make_client(start, 0) for _ in range(run.clients)]

    # Events: (time, tiebreak, kind, client index, payload). Channels are FIFO: a
    # message never overtakes an earlier one on the same channel.
    events: list[tuple[float, int, str, int, object]] = []
    last_arrival: dict[tuple[str, int], float] = {}
    counter = 0

    def schedule(at: float, kind: str, who: int, payload: object) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(events, (at, counter, kind, who, payload))

    def send(now: float, direction: str, who: int, payload: object) -> None:
        arrival = max(now + rng.expovariate(1.0), last_arrival.get((direction, who), 0.0))
        last_arrival[direction, who] = arrival
        schedule(arrival, direction, who, payload)

    for who in range(run.clients):
        for _ in range(run.edits_per_client):
            schedule(rng.uniform(0, 10), "edit", who, None)

    while events:
        now, _, kind, who, payload = heapq.heappop(events)
        if kind == "edit":
            client = clients[who]
            outgoing = client.edit(random_edit(rng, client.document, run))
            if outgoing is not None:
                run.sent += 1
                send(now, "up", who, (client.version, outgoing))
        elif kind == "up":
            base_version, op = payload  # type: ignore[misc]
            _, committed = server.submit(base_version, op)
            for other in range(run.clients):
                send(now, "down", other, None if other == who else committed)
        else:  # "down": an ack (None) or a remote op
            client = clients[who]
            if payload is None:
                outgoing = client.on_ack()
                if outgoing is not None:
                    run.sent += 1
                    send(now, "up", who, (client.version, outgoing))
            else:
                client.on_remote(payload)  # type: ignore[arg-type]
    return server, clients


def check(run: Run) -> None:
    server, clients = simulate(run)
    expected = server.document
    for index, client in enumerate(clients):
        assert client.idle(), f"client {index} still has ops pending"
        assert client.version == server.version, f"client {index} is behind"
        assert client.document == expected, f"client {index} diverged"
    assert server.version == run.sent, "an op was lost or committed twice"
    text = expected.text()
    for marker in run.markers_inserted:
        count = text.count(marker)
        assert count <= 1, f"marker {marker!r} duplicated"
        if not run.allow_delete:
            assert count == 1, f"insert {marker!r} vanished"


def run_for(seed: int) -> Run:
    rng = random.Random(f"shape-{seed}")
    return Run(
        seed=seed,
        clients=rng.randint(2, 5),
        edits_per_client=rng.randint(1, 25),
        allow_delete=seed % 3 != 0,
    )


def check_seeds(seeds: list[int] | range) -> None:
    override = os.environ.get("TANDEM_SIM_SEED")
    for seed in [int(override)] if override else seeds:
        try:
            check(run_for(seed))
        except AssertionError as error:
            raise AssertionError(f"{error} (TANDEM_SIM_SEED={seed})") from error


def test_clients_converge() -> None:
    check_seeds(with_fresh_seeds(range(300), 50, name="convergence", replay="TANDEM_SIM_SEED"))


@pytest.mark.slow
def test_clients_converge_many_seeds() -> None:
    check_seeds(range(300, 5_300))


def test_simulation_really_interleaves() -> None:
    """Guard against a driver that accidentally serialises everything."""
    run = run_for(1)
    server, _ = simulate(run)
    history = server.history  # type: ignore[attr-defined]
    assert len(history) == run.sent > run.clients
    transformed = sum(1 for seed in range(20) if _had_concurrency(run_for(seed)))
    assert transformed >= 15


def _had_concurrency(run: Run) -> bool:
    class Counting(MiniServer):
        concurrent = 0

        def submit(self, base_version: int, op: Delta) -> tuple[int, Delta]:
            if base_version < self.version:
                Counting.concurrent += 1
            return super().submit(base_version, op)

    simulate(run, make_server=Counting)
    return Counting.concurrent > 0

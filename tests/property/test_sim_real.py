"""Seeded simulation of the REAL server and client cores over in-memory channels.

The same idea as ``test_convergence.py``, but with ``tandem.sequencer.Sequencer``
on the server and ``tandem.client.state.ClientState`` in every client, plus
what goes wrong in production:

* random delays on FIFO channels (one each way per connection), every message
  going through JSON as on the wire;
* random disconnects: whatever is still on the connection's channels is lost;
  the client keeps typing offline, reconnects, re-joins with its version, takes
  the catch-up from ``sequencer.entries_since(v)`` (recognising its own op there
  as the ack) and resends its in-flight op with the same ``seq``;
* duplicate deliveries of submits (acked again as ``Duplicate``, never applied
  twice);
* random inserts (some astral characters), deletes and formats, and cursor
  presence through ``tandem.presence.PresenceTable``.

After each run: every client's document equals the server's, every ``(client,
seq)`` a client created is in the server's log exactly once (or was acked as a
no-op), versions have no gaps, and at every step a client's ``confirmed``
document equals the server's document at the client's version. In runs
without deletes, every inserted marker character is present exactly once.

Replay one run with ``TANDEM_SIM_SEED=<seed> pytest tests/property/test_sim_real.py``.
"""

from __future__ import annotations

import heapq
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from tandem.client.state import ClientState
from tandem.ot import Delta, Document, transform_selection
from tandem.presence import PresenceTable
from tandem.protocol import Cursor
from tandem.sequencer import Commit, Duplicate, NoOp, Sequencer

from .seeds import with_fresh_seeds

DOC = "sim"
FILLER = "ab 😀𝄞é\n"
# Characters used once each, so the end state shows whether an insert vanished or doubled.
MARKERS = [chr(c) for c in range(0x4E00, 0x4E00 + 20_000)]
NAMES = ("bold", "italic", "color")
VALUES: tuple[Any, ...] = (True, 1, "red", None)


@dataclass
class Shape:
    """The knobs of one run, derived from its seed."""

    seed: int
    clients: int
    actions: int
    allow_delete: bool
    disconnect_rate: float
    duplicate_rate: float


@dataclass
class Peer:
    """One simulated client: the real ClientState plus its connection status."""

    name: str
    state: ClientState
    epoch: int = 0  # bumped on every disconnect; older channel messages are lost
    connected: bool = True
    live: bool = True  # joined and caught up on the current connection
    seqs_created: set[int] = field(default_factory=set)


@dataclass
class World:
    shape: Shape
    rng: random.Random
    server: Sequencer
    presence: PresenceTable
    peers: list[Peer]
    #: The server's document at every version, to check each client's ``confirmed``.
    documents: list[Document]
    subscribed: set[int] = field(default_factory=set)
    noops: set[tuple[str, int]] = field(default_factory=set)
    markers: list[str] = field(default_factory=list)
    events: list[tuple[float, int, str, int, Any]] = field(default_factory=list)
    last_arrival: dict[tuple[str, int, int], float] = field(default_factory=dict)
    counter: int = 0
    now: float = 0.0
    stats: Counter[str] = field(default_factory=Counter)

    # -- the network ---------------------------------------------------------

    def schedule(self, at: float, kind: str, who: int, payload: Any) -> None:
        self.counter += 1
        heapq.heappush(self.events, (at, self.counter, kind, who, payload))

    def send(self, direction: str, who: int, message: dict[str, Any]) -> None:
        """Put ``message`` on ``who``'s current connection, FIFO, after a random delay."""
        peer = self.peers[who]
        key = (direction, who, peer.epoch)
        arrival = max(self.now + self.rng.expovariate(1.0), self.last_arrival.get(key, 0.0))
        self.last_arrival[key] = arrival
        self.schedule(arrival, direction, who, (peer.epoch, orjson.dumps(message)))

    # -- the server ------------------------------------------------------------

    def server_receive(self, who: int, message: dict[str, Any]) -> None:
        peer = self.peers[who]
        kind = message["type"]
        if kind == "join":
            version = message["v"]
            entries = self.server.entries_since(version)
            self.subscribed.add(who)
            ops = [
                {
                    "v": e.version,
                    "op": e.op.to_json(),
                    "client": e.client_id,
                    "user": e.user,
                    "seq": e.seq,
                }
                for e in entries
            ]
            self.send(
                "down",
                who,
                {
                    "type": "catchup",
                    "doc": DOC,
                    "from": version,
                    "v": self.server.version,
                    "ops": ops,
                    "presence": self.presence.snapshot(),
                    "permission": "write",
                },
            )
        elif kind == "op":
            self.server_submit(who, peer, message)
        elif kind == "presence":
            self.server_presence(peer, message)
        else:  # pragma: no cover - the sim sends nothing else
            raise AssertionError(f"unexpected message {kind}")

    def server_submit(self, who: int, peer: Peer, message: dict[str, Any]) -> None:
        seq = message["seq"]
        decision = self.server.submit(
            Delta.from_json(message["op"]),
            message["v"],
            client_id=peer.name,
            seq=seq,
            user=peer.name,
            now=self.now,
        )
        if isinstance(decision, Commit):
            entry = decision.entry
            self.documents.append(decision.document)
            self.presence.transform(entry.op, peer.name, version=entry.version)
            self.stats["commits"] += 1
            self.stats["concurrent"] += message["v"] < entry.version - 1
            self.send("down", who, {"type": "ack", "doc": DOC, "seq": seq, "v": entry.version})
            for other in self.subscribed - {who}:
                self.send(
                    "down",
                    other,
                    {
                        "type": "op",
                        "doc": DOC,
                        "v": entry.version,
                        "op": entry.op.to_json(),
                        "client": peer.name,
                        "user": peer.name,
                        "seq": seq,
                    },
                )
        else:
            assert isinstance(decision, Duplicate | NoOp)
            if isinstance(decision, NoOp):
                self.noops.add((peer.name, seq))
            self.stats["duplicates" if isinstance(decision, Duplicate) else "noops"] += 1
            self.send("down", who, {"type": "ack", "doc": DOC, "seq": seq, "v": decision.version})

    def server_presence(self, peer: Peer, message: dict[str, Any]) -> None:
        raw = message["cursor"]
        cursor = None
        if raw is not None:
            index, length = raw["index"], raw["length"]
            for entry in self.server.entries_since(message["v"]):
                side = "right" if entry.client_id == peer.name else "left"
                index, length = transform_selection(index, length, entry.op, side)
            cursor = Cursor(index, length)
        self.presence.update(
            peer.name,
            peer.name,
            peer.name,
            cursor,
            message.get("state"),
            self.now,
            version=self.server.version,
            length=len(self.server.document),
        )

    # -- the clients -----------------------------------------------------------

    def client_receive(self, who: int, message: dict[str, Any]) -> None:
        peer = self.peers[who]
        state = peer.state
        kind = message["type"]
        if kind == "catchup":
            state.catchup(message["ops"])
            peer.live = True
            resend = state.resend()
            if resend is not None:
                self.stats["resends"] += 1
                self.client_send(who, resend)
        elif kind == "ack":
            nxt = state.receive_ack(message["seq"], message["v"])
            if nxt is not None:
                self.client_send(who, nxt)
        elif kind == "op":
            state.receive_op(message["v"], Delta.from_json(message["op"]), message["client"])
        self.check_confirmed(peer)

    def client_send(self, who: int, message: dict[str, Any]) -> None:
        peer = self.peers[who]
        if message["type"] == "op":
            peer.seqs_created.add(message["seq"])
        if not (peer.connected and peer.live):
            return  # the state keeps it; it is resent after the catch-up
        self.send("up", who, message)
        if message["type"] == "op" and self.rng.random() < self.shape.duplicate_rate:
            self.send("up", who, message)

    def check_confirmed(self, peer: Peer) -> None:
        state = peer.state
        expected = self.documents[state.version]
        assert state.confirmed == expected, f"{peer.name}: confirmed differs at v{state.version}"

    def act(self, who: int) -> None:
        peer = self.peers[who]
        roll = self.rng.random()
        if peer.connected and roll < self.shape.disconnect_rate:
            self.disconnect(who)
        elif not peer.connected and roll < 0.4:
            self.reconnect(who)
        elif roll < 0.5 and peer.connected and peer.live:
            state = peer.state
            size = len(state.document)
            index = self.rng.randint(0, size)
            cursor = (index, self.rng.randint(0, size - index))
            state_field = {"color": self.rng.choice(["red", "blue"])} if roll < 0.45 else None
            self.send("up", who, state.presence_message(cursor, state_field))
        else:
            message = peer.state.local_edit(self.random_edit(peer.state.document))
            if message is not None:
                self.client_send(who, message)

    def disconnect(self, who: int) -> None:
        peer = self.peers[who]
        peer.epoch += 1  # everything still on the old connection is lost
        peer.connected = peer.live = False
        self.subscribed.discard(who)
        self.presence.remove(peer.name)
        self.stats["disconnects"] += 1

    def reconnect(self, who: int) -> None:
        peer = self.peers[who]
        peer.connected = True
        self.send("up", who, {"type": "join", "doc": DOC, "v": peer.state.version})

    def random_edit(self, document: Document) -> Delta:
        length = len(document)
        roll = self.rng.random()
        delta = Delta()
        if length == 0 or roll < 0.5 or (not self.shape.allow_delete and roll < 0.75):
            marker = MARKERS[len(self.markers)]
            self.markers.append(marker)
            text = marker + "".join(self.rng.choice(FILLER) for _ in range(self.rng.randint(0, 3)))
            attributes = None
            if self.rng.random() < 0.3:
                attributes = {self.rng.choice(NAMES): self.rng.choice(VALUES[:-1])}
            return delta.retain(self.rng.randint(0, length)).insert(text, attributes)
        pos = self.rng.randint(0, length - 1)
        span = self.rng.randint(1, min(5, length - pos))
        if roll < 0.75:
            return delta.retain(pos).delete(span)
        return delta.retain(pos).retain(span, {self.rng.choice(NAMES): self.rng.choice(VALUES)})


def simulate(shape: Shape) -> World:
    """Run one seeded session to quiescence."""
    rng = random.Random(shape.seed)
    start = Document(Delta().insert("hello 😀 world", {"bold": True}).insert("\n"))
    world = World(
        shape=shape,
        rng=rng,
        server=Sequencer(DOC, start, 0),
        presence=PresenceTable(),
        peers=[
            Peer(f"c{i}", ClientState(DOC, f"c{i}", content=start, version=0))
            for i in range(shape.clients)
        ],
        documents=[start],
        subscribed=set(range(shape.clients)),
    )
    for who in range(shape.clients):
        for _ in range(shape.actions):
            world.schedule(rng.uniform(0, 30), "act", who, None)
    # Everyone comes back at the end, so the run can settle.
    for who in range(shape.clients):
        world.schedule(31.0, "settle", who, None)

    while world.events:
        world.now, _, kind, who, payload = heapq.heappop(world.events)
        peer = world.peers[who]
        if kind == "act":
            world.act(who)
        elif kind == "settle":
            if not peer.connected:
                world.reconnect(who)
        else:
            epoch, raw = payload
            if epoch != peer.epoch:
                continue  # sent on a connection that has since dropped
            message = orjson.loads(raw)
            if kind == "up":
                world.server_receive(who, message)
            else:
                world.client_receive(who, message)
    return world


def check(world: World) -> None:
    server = world.server
    entries = server.entries_since(0)
    assert [e.version for e in entries] == list(range(1, server.version + 1)), "version gap"
    logged = Counter((e.client_id, e.seq) for e in entries)
    assert all(count == 1 for count in logged.values()), "an op was committed twice"
    for peer in world.peers:
        state = peer.state
        assert peer.live, f"{peer.name} never caught up"
        assert state.synchronized, f"{peer.name} still has ops pending"
        assert state.version == server.version, f"{peer.name} is behind"
        assert state.document == server.document, f"{peer.name} diverged"
        for seq in peer.seqs_created:
            key = (peer.name, seq)
            assert logged[key] + (key in world.noops) == 1, f"{key} lost or doubled"
    for entry in world.presence:
        if entry.cursor is not None:
            assert entry.cursor.index + entry.cursor.length <= len(server.document)
    text = server.document.text()
    for marker in world.markers:
        count = text.count(marker)
        assert count <= 1, f"marker {marker!r} duplicated"
        if not world.shape.allow_delete:
            assert count == 1, f"insert {marker!r} vanished"


def shape_for(seed: int, scale: int = 1) -> Shape:
    rng = random.Random(f"shape-{seed}")
    return Shape(
        seed=seed,
        clients=rng.randint(2, 4 + scale),
        actions=rng.randint(1, 30 * scale),
        allow_delete=seed % 3 != 0,
        disconnect_rate=rng.choice([0.0, 0.03, 0.1]),
        duplicate_rate=rng.choice([0.0, 0.1, 0.3]),
    )


def check_seeds(seeds: list[int] | range, scale: int = 1) -> Counter[str]:
    override = os.environ.get("TANDEM_SIM_SEED")
    totals: Counter[str] = Counter()
    for seed in [int(override)] if override else seeds:
        try:
            world = simulate(shape_for(seed, scale))
            check(world)
        except Exception as error:
            raise AssertionError(f"{error!r} (TANDEM_SIM_SEED={seed})") from error
        totals.update(world.stats)
    return totals


def test_real_sequencer_and_clients_converge() -> None:
    seeds = with_fresh_seeds(range(300), 50, name="real sequencer", replay="TANDEM_SIM_SEED")
    totals = check_seeds(seeds)
    # Guard against a driver that accidentally avoids the hard paths.
    if not os.environ.get("TANDEM_SIM_SEED"):
        for what in ("concurrent", "disconnects", "resends", "duplicates", "noops"):
            assert totals[what] > 20, f"too few {what}: {dict(totals)}"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_real_sequencer_and_clients_converge_many_seeds() -> None:
    # Bigger runs (up to 6 clients, 60 actions each): about 40 ms of CPU per seed.
    check_seeds(range(300, 3_300), scale=2)

"""Properties of the sans-I/O delivery core, driven by random event orders and faults.

``tandem.session.delivery.Delivery`` is driven the way the session drives it
— the real ``Sequencer`` decides each submission, a model store commits, syncs,
fails and loses power — but every event comes in an order hypothesis picks:
commits late and in pieces, syncs late, failed commits, failed syncs, joins,
leaves and reconnects mid-flight, resubmits, presence, and power loss dropping
what was committed but not synced. Every message a client receives is checked
as it arrives, against the model store at that moment:

* **synced before ack**: an ``ack`` for version v arrives only once the store has
  synced v;
* **committed before broadcast**: an ``op`` for version v arrives only once the
  store holds that very op at v (after a failed commit, too: the rollback);
* **in order**: a client hears versions one after the other, each once, its own
  commits as acks, the others' as ops — so no client sees v+1 before v;
* **the author's ack first**: nothing sequenced after an op reaches its author
  before the op's ack;
* **after a power loss**: every acked op is in the reloaded history, and every op
  a client saw is either in it or above its head (that client's re-join is then
  answered with a snapshot, a resync);
* and at the end, with the store healthy, every submission was answered, nobody
  is held, every client is at the head.

Runs are deterministic (``derandomize``): a failure prints its event list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.errors import StorageError
from tandem.ot.delta import Delta
from tandem.ot.document import Document
from tandem.records import OpRecord
from tandem.sequencer import Commit, Sequencer
from tandem.session.delivery import Delivery, Member, Pending, Submission

DOC = "d"
CLIENTS = ("a", "b", "c")


@dataclass
class Store:
    """The model store: what is committed, how much of it is synced, what is queued."""

    committed: list[OpRecord] = field(default_factory=list)
    synced: int = 0
    queue: list[OpRecord] = field(default_factory=list)
    #: After a failed sync the store refuses every write until restarted.
    broken: bool = False


class Client:
    """One connection of a client: a ``Peer`` that checks every message as it arrives."""

    def __init__(self, world: World, client: str, joined_at: int) -> None:
        self.world = world
        self.client = client
        self.user = "u"
        self.name = client
        self.key = f"{client}@u"
        #: The last version this connection has (from its snapshot, ops and acks).
        self.last = joined_at
        #: Versions it saw, and whose op each was.
        self.seen: dict[int, tuple[str, int | None]] = {}
        #: seq -> version of its own commits not acknowledged yet.
        self.outstanding: dict[int, int] = {}
        #: seq -> the version it was acked at (-1: refused).
        self.answered: dict[int, int] = {}
        self.asked: set[int] = set()
        self.closed = False

    def send(self, message: str) -> None:
        if self.closed:
            return  # a closed connection's sends go nowhere
        data: dict[str, Any] = orjson.loads(message)
        kind = data["type"]
        store = self.world.store
        if kind == "op":
            version = data["v"]
            for mine in self.outstanding.values():
                assert mine > version, f"{self.client} heard v{version} before its ack of v{mine}"
            assert version == self.last + 1, f"{self.client} got v{version} after v{self.last}"
            assert len(store.committed) >= version, f"v{version} broadcast before its commit"
            stored = store.committed[version - 1]
            assert (stored.client_id, stored.seq) == (f"{data['client']}@u", data["seq"]), (
                f"v{version} broadcast is not the op the store holds"
            )
            self.seen[version] = (stored.client_id, stored.seq)
            self.last = version
        elif kind == "ack":
            version, seq = data["v"], data["seq"]
            assert store.synced >= version, f"ack of v{version} before its sync"
            # The same ack twice is allowed (a resubmit on a new connection while the
            # first copy was being stored is acked as the author and as a duplicate).
            assert self.answered.get(seq, version) == version, (
                f"{self.client} seq {seq} answered twice"
            )
            self.answered[seq] = version
            self.outstanding.pop(seq, None)
            if version > self.last:
                assert version == self.last + 1, f"{self.client} ack v{version} after v{self.last}"
                stored = store.committed[version - 1]
                assert (stored.client_id, stored.seq) == (self.key, seq), "ack of another op"
                self.seen[version] = (self.key, seq)
                self.last = version
            self.world.acked[(self.key, seq)] = version
        elif kind == "error":
            assert data["seq"] not in self.answered, f"{self.client} answered twice"
            self.answered[data["seq"]] = -1
            self.outstanding.pop(data["seq"], None)
        elif kind == "presence":
            # (After a failed sync an author is behind the ops it was refused: it
            # hears ERR_STORAGE, and so does everything it sends until a restart.)
            assert store.broken or data["v"] <= self.last, (
                f"presence at v{data['v']} before v{self.last + 1}"
            )
        elif kind != "snapshot":  # pragma: no cover - the core sends nothing else here
            raise AssertionError(kind)


class World:
    """The session around one ``Delivery``, as ``tandem.session.document`` drives it."""

    def __init__(self) -> None:
        self.store = Store()
        self.seqs: dict[str, int] = dict.fromkeys(CLIENTS, 0)
        #: client -> (op, base version) of its last submission, for resubmits.
        self.last_sent: dict[str, tuple[int, Delta, int]] = {}
        self.acked: dict[tuple[str, int], int] = {}
        self._restart()

    def _restart(self) -> None:
        """Load the document from the store, as after a restart."""
        history = self.store.committed
        document = Document()
        for record in history:
            document = document.apply(record.op)
        self.document = document
        self.sequencer = Sequencer(DOC, document, len(history), list(history))
        self.delivery = Delivery(DOC, len(history), self)
        self.connections: dict[str, Client] = {}

    # -- the listener ----------------------------------------------------------------

    def advanced(self, record: OpRecord, document: Document, pending: Pending | None) -> None:
        self.document = document

    def acknowledged(self, pending: Pending) -> None:
        pass

    # -- events ------------------------------------------------------------------------

    def join(self, client: str) -> None:
        self.leave(client)
        head = self.delivery.committed_version
        peer = Client(self, client, head)
        self.connections[client] = peer
        reply = orjson.dumps({"type": "snapshot", "v": head}).decode()
        self.delivery.joined(Member(peer, "write"), reply)

    def leave(self, client: str) -> None:
        peer = self.connections.pop(client, None)
        if peer is not None:
            self.delivery.left(peer)
            peer.closed = True

    def submit(self, client: str, again: bool) -> None:
        peer = self.connections.get(client)
        if peer is None:
            return
        if again and client in self.last_sent:
            seq, op, base = self.last_sent[client]
            if seq in peer.asked:
                return  # asked on this connection already; one answer each
        else:
            self.seqs[client] += 1
            seq = self.seqs[client]
            op, base = Delta().insert(f"{client}{seq}"), peer.last
            self.last_sent[client] = (seq, op, base)
        peer.asked.add(seq)
        member = self.delivery.members[peer]
        submission = Submission(op, base, seq)
        decision = self.sequencer.submit(op, base, client_id=peer.key, seq=seq, user="u", now=0.0)
        if isinstance(decision, Commit):
            record = decision.entry
            peer.outstanding[seq] = record.version
            self.delivery.decided(
                Pending(record.version, member, submission, record, decision.document)
            )
            self.store.queue.append(record)
        else:
            self.delivery.decided(Pending(decision.version, member, submission))

    def commit(self, count: int, synced: bool) -> None:
        store = self.store
        if not store.queue:
            return
        if store.broken:
            self.fail()
            return
        batch, store.queue = store.queue[:count], store.queue[count:]
        store.committed.extend(batch)
        if synced:
            store.synced = len(store.committed)
        self.delivery.committed(batch[-1].version, synced)

    def sync(self) -> None:
        store = self.store
        if store.broken or store.synced == len(store.committed):
            return
        store.synced = len(store.committed)
        self.delivery.synced(store.synced)

    def fail(self) -> None:
        """The next commit fails: nothing of the queue is written; the session rolls back."""
        if not self.store.queue:
            return
        self.store.queue = []
        head = self.delivery.committed_version
        self.sequencer = Sequencer(DOC, self.document, head, self.store.committed[:head])
        self.delivery.failed(StorageError("disk full"))

    def sync_fail(self) -> None:
        store = self.store
        if store.broken or store.synced == len(store.committed):
            return
        store.broken = True
        self.delivery.sync_failed(StorageError("fsync failed"))

    def presence(self, client: str) -> None:
        if client in self.connections:
            head = self.delivery.committed_version
            message = orjson.dumps({"type": "presence", "client": client, "v": head}).decode()
            self.delivery.broadcast(message, skip_client=client)

    def power_loss(self) -> None:
        """Everything committed but not synced is gone; the document reloads and all re-join."""
        store = self.store
        store.committed = store.committed[: store.synced]
        store.queue = []
        store.broken = False
        head = len(store.committed)
        for (key, seq), version in self.acked.items():
            assert version <= head, f"acked v{version} ({key} {seq}) lost by a power loss"
            assert (store.committed[version - 1].client_id, store.committed[version - 1].seq) == (
                key,
                seq,
            )
        for peer in self.connections.values():
            if peer.last > head:
                continue  # its re-join names a version above the head: a snapshot resyncs it
            for version, who in peer.seen.items():
                stored = store.committed[version - 1]
                assert who == (stored.client_id, stored.seq), (
                    f"{peer.client} saw v{version} that the reloaded history does not hold"
                )
        clients = list(self.connections)
        for peer in self.connections.values():
            peer.closed = True  # the restart closed every connection
        self._restart()
        for client in clients:
            self.join(client)

    def settle(self) -> None:
        """The store catches up: everything asked is answered, nobody is held, all at the head."""
        if self.store.broken:
            return
        while self.store.queue:
            self.commit(len(self.store.queue), True)
        self.sync()
        delivery = self.delivery
        assert not delivery.busy, "something still waits for the store"
        for peer in self.connections.values():
            member = delivery.members[peer]
            assert member.held is None, f"{peer.client} still held"
            unanswered = peer.asked - set(peer.answered)
            assert not unanswered, f"{peer.client} unanswered {unanswered}"
            assert peer.last == delivery.committed_version, f"{peer.client} not at the head"


client_names = st.sampled_from(CLIENTS)
events = st.one_of(
    st.tuples(st.just("join"), client_names),
    st.tuples(st.just("leave"), client_names),
    st.tuples(st.just("submit"), client_names, st.booleans()),
    st.tuples(st.just("commit"), st.integers(1, 4), st.booleans()),
    st.tuples(st.just("sync")),
    st.tuples(st.just("fail")),
    st.tuples(st.just("sync_fail")),
    st.tuples(st.just("presence"), client_names),
    st.tuples(st.just("power_loss")),
)
#: Mostly submits and store progress: faults are rarer, as they are in life.
weighted = st.one_of(
    st.tuples(st.just("submit"), client_names, st.booleans()),
    st.tuples(st.just("commit"), st.integers(1, 4), st.booleans()),
    st.tuples(st.just("sync")),
    events,
)


def run(program: list[tuple[Any, ...]]) -> World:
    world = World()
    for client in CLIENTS:
        world.join(client)
    for event in program:
        name, *args = event
        getattr(world, name)(*args)
    world.settle()
    return world


@settings(derandomize=True)
@given(st.lists(weighted, max_size=60))
def test_delivery_rules_hold_in_any_event_order(program: list[tuple[Any, ...]]) -> None:
    run(program)


@settings(derandomize=True)
@given(st.lists(st.sampled_from(["submit", "commit", "sync", "join", "presence"]), max_size=40))
def test_joins_mid_flight_and_late_syncs(names: list[str]) -> None:
    """Without faults: the three clients type while the store commits unsynced, then syncs."""
    program: list[tuple[Any, ...]] = []
    for index, name in enumerate(names):
        client = CLIENTS[index % len(CLIENTS)]
        if name == "commit":
            program.append(("commit", 1 + index % 3, False))
        elif name in ("submit", "join", "presence"):
            program.append((name, client, index % 4 == 0) if name == "submit" else (name, client))
        else:
            program.append((name,))
    run(program)


def test_power_loss_keeps_every_ack_and_resyncs_who_saw_the_lost() -> None:
    """a's op is committed and broadcast, not synced; the power fails; b saw it and is above
    the reloaded head, so its re-join is a snapshot; a's ack never went out."""
    world = World()
    for client in CLIENTS:
        world.join(client)
    world.submit("a", False)
    world.commit(1, False)
    b = world.connections["b"]
    assert b.last == 1 and world.acked == {}
    world.power_loss()
    assert world.store.committed == [] and world.acked == {}
    world.settle()

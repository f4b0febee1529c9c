"""Seeded simulation of many clients against the REAL ``DocumentManager``/``DocumentSession``.

Where ``test_sim_real.py`` drives the pure ``Sequencer``, this one drives the
async shell the server runs: ``DocumentManager.open`` (single-flight loads,
idle unloads and reloads from a snapshot), ``DocumentSession.join``/``submit``/
``presence.update``/``leave``, the ``GroupCommitter`` writing to a
``MemoryStore`` (with random commit latency and injected failures), presence
coalescing, expiry and the sweeper. Every client runs the real
``tandem.client.state.ClientState``.

Determinism: everything runs on one asyncio loop whose clock is virtual
(``VirtualLoop``: when the loop would block, time jumps to the next timer), and
``tandem.session`` reads that clock too. There is no real I/O and no thread,
so a seed fully determines a run: a failure prints the seed and replays with
``TANDEM_SEED=<seed>``.

The network: each connection is two FIFO channels (like TCP) with random
delays, so frames of different connections interleave and reorder freely while
each connection stays in order. Every frame goes through JSON and
``tandem.protocol.parse`` as on the wire. What goes wrong:

* disconnects, abrupt (frames the server had not read yet are lost) or clean;
  the client keeps typing offline, re-joins with its version, takes the
  catch-up and resubmits its in-flight op with the same ``seq``;
* disconnects *without* resubmission: the client lost its local state (a
  closed tab) and re-joins without a version, starting its seqs after the
  snapshot's ``last_seq``;
* duplicate submits (the same frame twice), a client far behind (offline for
  most of the run, typing, then catching up on everything), storage failures
  (``ERR_STORAGE``: the client resubmits), presence churn (updates, leaves,
  expiry after silence) and idle unloads;
* power loss (``SimStore.power_loss``): soon after a commit (its broadcast may
  be out, its sync not), every op committed and not yet synced vanishes with
  the snapshots above them, every socket dies, the dead process's writes never
  complete, and a new ``DocumentManager`` serves the store. Clients come back
  at random times, some after the head has passed their version again; each
  re-joins with its version and ``h`` (the fingerprint of its document there)
  and, when answered with a snapshot, carries its unacknowledged edits over
  (``tandem.client.carryover``);
* an ``authorize`` hook (one seed in three): each decision waits a random
  (virtual) while, during which commits fail, power goes and ops pile up
  behind it, and every op inserting a "cursed" marker is rejected; its client
  drops it and its buffer, as the real clients do.

After each run: every replica equals the server's document and the store's
(replayed from the log, and reloaded from the newest snapshot); versions have
no gaps; every ``(client, seq)`` is in the log at most once; every acked op is
in the log exactly once at the version its ack named (or was a no-op that
inserted nothing); no inserted text is doubled (and, in runs without deletes,
none is lost); in runs without deletes every insert a client typed is there
exactly once unless that client lost its tab (so unacknowledged edits survive
a power loss); no cursed marker is in the document; every client's view of
presence equals the server's table.

CI runs ``SEEDS`` seeds; ``--slow`` runs ``SLOW_SEEDS``; ``TANDEM_SIM_SEEDS=N``
runs N seeds (from ``TANDEM_SIM_START``, default 0); ``TANDEM_SEED=S`` replays
one. The long mode also runs as a script, in chunks::

    python tests/property/test_session_sim.py --start 0 --count 25000
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import random
import selectors
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from pycrdt import Doc, Text
from tests.property.yjs_link import FrameLink

from tandem.authorization import AuthorizeRequest
from tandem.client.carryover import carry_over
from tandem.client.state import ClientState
from tandem.errors import Rejected, StorageError, TandemError
from tandem.merge import yproto
from tandem.metrics import Metrics
from tandem.ot import Delta, Document
from tandem.ot.delta import Insert
from tandem.protocol import Join, Leave, Presence, Submit, encode, error_message, parse
from tandem.records import OpRecord
from tandem.session import document as document_module
from tandem.session import manager as manager_module
from tandem.session import offline as offline_module
from tandem.session import presence as presence_module
from tandem.session.document import DocumentSession
from tandem.session.manager import DocumentManager
from tandem.settings import Settings
from tandem.storage.memory import MemoryStore

try:
    from .seeds import with_fresh_seeds
except ImportError:  # run as a script (the long mode, in chunks)
    from seeds import with_fresh_seeds  # type: ignore[no-redef]

DOC = "sim"
FILLER = "ab 😀é\n"
#: Characters used once each, so the end state shows whether an insert vanished or doubled.
MARKERS = [chr(c) for c in range(0x4E00, 0x4E00 + 20_000)]
MARKER_SET = frozenset(MARKERS)
NAMES = ("bold", "italic")
HORIZON = 20.0
#: Virtual seconds a run may take to settle after the horizon before it counts as a livelock.
SETTLE_LIMIT = 300.0
#: Loop iterations in a row with no timer wait: a spin (a real server would burn a core).
SPIN_LIMIT = 50_000
SEEDS = 2_000
SLOW_SEEDS = 100_000


class SimFailure(AssertionError):
    pass


# -- a loop with a virtual clock ---------------------------------------------------------


class _Selector(selectors.SelectSelector):
    """Never blocks: waiting ``timeout`` seconds moves the virtual clock instead."""

    def __init__(self, loop: VirtualLoop) -> None:
        super().__init__()
        self._virtual = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise SimFailure("the loop would wait forever (nothing scheduled)")
        # Time always moves a little, as a real clock does: a timer computed to fire
        # "in 1e-17 s" (float rounding) must not spin the loop at one instant forever.
        self._virtual.virtual_now += max(timeout, 1e-9)
        self._virtual.spins = 0 if timeout > 1e-6 else self._virtual.spins + 1
        if self._virtual.spins > SPIN_LIMIT:
            raise SimFailure(f"livelock: {SPIN_LIMIT} loop iterations without time passing")
        return super().select(0)


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.virtual_now = 0.0
        self.spins = 0
        super().__init__(_Selector(self))

    def time(self) -> float:
        return self.virtual_now


class _Clock:
    """Stands in for the ``time`` module inside the ``tandem.session`` modules."""

    def __init__(self, loop: VirtualLoop) -> None:
        self._loop = loop

    def monotonic(self) -> float:
        return self._loop.virtual_now

    perf_counter = monotonic

    def time(self) -> float:
        return 1_700_000_000.0 + self._loop.virtual_now


#: The session modules that read a clock.
_TIMED = (document_module, manager_module, offline_module, presence_module)


@contextlib.contextmanager
def virtual_time(loop: VirtualLoop) -> Iterator[None]:
    saved = [module.time for module in _TIMED]
    for module in _TIMED:
        module.time = _Clock(loop)  # type: ignore[assignment]
    try:
        yield
    finally:
        for module, time_module in zip(_TIMED, saved, strict=True):
            module.time = time_module


# -- the run's knobs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    seed: int
    clients: int
    users: int
    actions: int
    delay: float
    commit_delay: float
    fail_rate: float
    disconnect_rate: float
    fresh_rate: float
    duplicate_rate: float
    allow_delete: bool
    far_behind: bool
    settings: Settings
    #: Up to this long between a commit and its sync (0: synced as committed).
    sync_delay: float
    #: Virtual times at which the power fails (committed, unsynced ops vanish) and the
    #: server restarts.
    power_losses: tuple[float, ...]


def shape_for(seed: int) -> Shape:
    rng = random.Random(f"session-sim-{seed}")
    clients = rng.randint(2, 5)
    sync_delay = rng.choice([0.0, 0.05, 0.3])
    # A power loss needs a window between commit and sync to lose anything.
    losses = rng.choice([0, 0, 1, 2]) if sync_delay else 0
    return Shape(
        seed=seed,
        clients=clients,
        users=rng.randint(1, clients),
        actions=rng.randint(2, 14),
        delay=rng.choice([0.01, 0.1, 0.5]),
        commit_delay=rng.choice([0.0, 0.05, 0.3]),
        fail_rate=rng.choice([0.0, 0.0, 0.05]),
        disconnect_rate=rng.choice([0.0, 0.05, 0.15]),
        fresh_rate=rng.choice([0.0, 0.3]),
        duplicate_rate=rng.choice([0.0, 0.1, 0.3]),
        allow_delete=seed % 3 != 0,
        far_behind=rng.random() < 0.3,
        settings=Settings(
            node_id="sim",
            data_dir=__import__("pathlib").Path("unused"),
            snapshot_every=rng.choice([3, 10, 100]),
            document_idle_unload=rng.choice([1.0, 5.0, 30.0]),
            presence_timeout=rng.choice([3.0, 30.0]),
            presence_interval=0.05,
            commit_max_delay=rng.choice([0.0, 0.0, 0.02]),
            commit_max_batch=rng.choice([1, 4, 512]),
        ),
        sync_delay=sync_delay,
        power_losses=tuple(sorted(rng.uniform(0, HORIZON) for _ in range(losses))),
    )


# -- the store, with latency and failures --------------------------------------------------------


class SimStore(MemoryStore):
    """A ``MemoryStore`` whose appends take random (virtual) time and sometimes fail."""

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world
        self._synced_at = 0.0
        #: The head a power loss keeps: every op up to it is synced.
        self.durable = 0
        #: Bumped by a power loss: a write or sync of the dead process never completes.
        self.boot = 0
        self.dead: list[asyncio.Future[None]] = []

    async def commit(self, records: Any) -> asyncio.Future[None] | None:
        """Commit now, sync up to ``sync_delay`` later (in commit order, as one fsync thread)."""
        boot = self.boot
        await self.append(records)
        loop = asyncio.get_running_loop()
        head = len(self._documents[DOC].ops)
        if not self.world.shape.sync_delay:
            self.durable = max(self.durable, head)
            return None
        synced: asyncio.Future[None] = loop.create_future()
        at = max(
            self._synced_at, loop.time() + self.world.rng.uniform(0, self.world.shape.sync_delay)
        )
        self._synced_at = at

        def sync() -> None:
            if self.boot == boot:
                self.durable = max(self.durable, head)
                synced.set_result(None)

        loop.call_at(at, sync)
        if self.world.armed:
            # Cut the power soon after this commit: its broadcast may be out, its sync not.
            self.world.armed = False
            self.world.in_flight += 1  # the drain waits for the cut
            loop.call_later(
                self.world.rng.uniform(0, self.world.shape.delay * 2),
                self.world.guard(self.world.power_loss),
            )
        return synced

    async def append(self, records: Any) -> None:
        world = self.world
        boot = self.boot
        if world.shape.commit_delay:
            await asyncio.sleep(world.rng.uniform(0, world.shape.commit_delay))
        if boot != self.boot:
            await self.hang()  # the process that wrote this died with the power
        if world.shape.fail_rate and world.rng.random() < world.shape.fail_rate:
            world.stats["store_failures"] += 1
            raise StorageError("injected failure")
        await super().append(records)

    async def save_snapshot(self, snapshot: Any) -> None:
        if snapshot.version > len(self._documents[snapshot.doc].ops):
            raise SimFailure(f"snapshot at v{snapshot.version} above the stored head")
        await super().save_snapshot(snapshot)

    async def hang(self) -> None:
        """Wait forever (the future is kept, so the waiting task is not collected)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.dead.append(future)
        await future

    def power_loss(self) -> list[tuple[str, int | None]]:
        """Everything committed and not synced vanishes; returns the lost ``(client, seq)``s."""
        self.boot += 1
        self._synced_at = 0.0
        state = self._documents.get(DOC)
        if state is None:
            return []
        lost = state.ops[self.durable :]
        del state.ops[self.durable :]
        for stored in lost:
            if stored.seq is not None:
                del state.seqs[(stored.client_id, stored.seq)]
        for version in [v for v in state.snapshots if v > self.durable]:
            del state.snapshots[version]
        return [(stored.client_id, stored.seq) for stored in lost]

    async def load(self, doc: str) -> Any:
        self.world.stats["loads"] += 1
        return await super().load(doc)


class ProcessStore:
    """The store as one server process sees it: once the power fails, it never answers."""

    def __init__(self, store: SimStore) -> None:
        self.store = store
        self.boot = store.boot

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)
        if not inspect.iscoroutinefunction(method):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.store.boot != self.boot:
                await self.store.hang()
            result = await method(*args, **kwargs)
            if self.store.boot != self.boot:
                await self.store.hang()  # the answer never reaches the dead process
            return result

        return call


# -- connections: the server side of one socket, and its two channels -----------------------------


class SimConnection:
    """One socket. Implements ``tandem.session.Peer`` for the session."""

    def __init__(self, world: World, owner: SimClient) -> None:
        self.world = world
        self.owner = owner
        self.client = owner.id
        self.user = owner.user
        self.name = owner.user.title()
        self.open = True
        self.sessions: dict[str, DocumentSession] = {}
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.up_last = 0.0
        self.down_last = 0.0
        self.reader = world.loop.create_task(self.read())

    # server → client
    def send(self, message: str) -> None:
        if self.open:
            self.down_last = self.world.transmit(self.down_last, self._arrive_down, message)

    def _arrive_down(self, message: str) -> None:
        if self.open:
            self.owner.receive(orjson.loads(message))

    # client → server
    def submit_frame(self, frame: str) -> None:
        self.up_last = self.world.transmit(self.up_last, self._arrive_up, frame)

    def _arrive_up(self, frame: str) -> None:
        if self.open:
            self.inbox.put_nowait(frame)

    def drop(self, abrupt: bool) -> None:
        """The socket closes; with ``abrupt`` the frames the server had not read are lost."""
        self.open = False
        if abrupt:
            while not self.inbox.empty():
                self.inbox.get_nowait()
        self.inbox.put_nowait(None)

    async def read(self) -> None:
        """As ``Connection.handle`` does: one frame at a time, each error one reply."""
        while (frame := await self.inbox.get()) is not None:
            await self.handle(frame)
        for session in self.sessions.values():
            session.leave(self)
        self.sessions.clear()

    async def handle(self, frame: str) -> None:
        manager = self.world.manager
        now = self.world.loop.time()
        where: dict[str, Any] = {}
        try:
            message = parse(frame)
            if isinstance(message, Join):
                session = await manager.open(message.doc)
                if message.doc in self.sessions:
                    self.sessions.pop(message.doc).leave(self)
                self.sessions[message.doc] = session
                await session.join(self, "write", message.version, message.fingerprint)
            elif isinstance(message, Submit):
                where = {"doc": message.doc, "seq": message.seq, "ref": message.ref}
                session = self.sessions[message.doc or DOC]
                member = session.member(self)
                session.touch(self, now)
                await session.submit(member, message.op, message.base_version, message.seq)
            elif isinstance(message, Presence):
                session = self.sessions[message.doc or DOC]
                session.presence.update(
                    session.member(self), message.cursor, message.state, message.base_version, now
                )
            elif isinstance(message, Leave):
                self.sessions.pop(message.doc).leave(self)
        except TandemError as error:
            self.send(encode(error_message(error, **where)))
        except Exception as exc:  # noqa: BLE001 - the gateway would answer ERR_INTERNAL: a bug
            if self.world.failure is None:
                self.world.failure = exc


# -- clients ----------------------------------------------------------------------------


class SimClient:
    """A client app: the real ``ClientState`` plus reconnect logic as in docs/protocol.md."""

    def __init__(self, world: World, index: int, user: str) -> None:
        self.world = world
        self.index = index
        self.user = user
        self.id = f"c{index}"
        self.key = f"{self.id}@{user}"
        self.state: ClientState | None = None
        self.connection: SimConnection | None = None
        self.live = False
        #: (client key, seq) → (version named by the ack, the op as sent)
        self.acked: dict[tuple[str, int], tuple[int, Delta]] = {}
        self.generation = 0
        #: What this client believes the others' presence is: client → (cursor, state).
        self.view: dict[str, tuple[tuple[int, int] | None, dict[str, Any]]] = {}

    # -- sending ----------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        connection = self.connection
        if connection is None or not connection.open:
            return  # offline: the state keeps its pending op; it is resent after a catch-up
        if message["type"] == "op" and not self.live:
            return  # the catch-up answering our join comes first; then we resend
        frame = orjson.dumps(message).decode()
        connection.submit_frame(frame)
        if message["type"] == "op" and self.world.rng.random() < self.world.shape.duplicate_rate:
            self.world.stats["duplicate_submits"] += 1
            connection.submit_frame(frame)

    def connect(self, *, fresh: bool = False) -> None:
        if fresh and self.state is not None and not self.world.reuse_ids:
            # A lost tab loses its client id with its pending edits (the JS client
            # keeps them together); reusing the id is test_fresh_client_reusing_its_id.
            self.world.forgiven.update(self.world.typed.pop(self.key, set()))
            self.generation += 1
            self.id = f"c{self.index}g{self.generation}"
            self.key = f"{self.id}@{self.user}"
        self.connection = SimConnection(self.world, self)
        self.live = False
        self.view.clear()
        if fresh or self.state is None:
            self.state = None  # a lost tab: pending edits are gone, nothing was acked for them
            self.send({"type": "join", "doc": DOC})
        else:
            self.send(
                {
                    "type": "join",
                    "doc": DOC,
                    "v": self.state.version,
                    "h": self.state.confirmed.fingerprint(),
                }
            )

    def reconnect(self) -> None:
        if self.connection is None:
            self.connect()

    def disconnect(self) -> None:
        if self.connection is not None:
            self.connection.drop(abrupt=self.world.rng.random() < 0.5)
        self.connection = None
        self.live = False
        self.world.stats["disconnects"] += 1

    # -- receiving --------------------------------------------------------------------------

    def receive(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        state = self.state
        if kind == "snapshot" and state is not None:
            # A re-join answered with a snapshot: another history (a power loss).
            self.world.stats["carried_over"] += 1
            if not state.synchronized:
                self.world.stats["carried_pending"] += 1
            content = Delta.from_json(message["content"])
            _, carried = carry_over(state, message["v"], content, message["last_seq"])
            self._loaded(message)
            if carried is not None:
                self.send(carried)
        elif kind == "snapshot":
            last_seq = message["last_seq"]
            self.state = ClientState(
                DOC,
                self.id,
                content=Delta.from_json(message["content"]),
                version=message["v"],
                first_seq=(last_seq or 0) + 1,
            )
            self._loaded(message)
        elif kind == "catchup":
            assert state is not None
            ops = message["ops"]
            pending = state.inflight
            if pending is not None:
                for entry in ops:
                    if entry["client"] == self.id and entry["seq"] == pending.seq:
                        self._record_ack(pending.seq, entry["v"], pending.sent)
            if len(ops) >= 10:
                self.world.stats["long_catchups"] += 1
            state.catchup(ops)
            self._loaded(message)
            resend = state.resend()
            if resend is not None:
                self.world.stats["resends"] += 1
                self.send(resend)
        elif kind == "op":
            assert state is not None and self.live, f"{self.id}: op before its catch-up"
            state.receive_op(message["v"], Delta.from_json(message["op"]), message["client"])
        elif kind == "ack":
            assert state is not None
            pending = state.inflight
            if pending is not None and message["seq"] == pending.seq:
                self._record_ack(pending.seq, message["v"], pending.sent)
            following = state.receive_ack(message["seq"], message["v"])
            if following is not None:
                self.send(following)
        elif kind == "presence":
            assert state is not None
            other = message["client"]
            if message.get("left"):
                self.world.stats["presence_left"] += 1
                self.view.pop(other, None)
                state.forget_remote_cursor(other)
            else:
                self._remember(state, message)
        elif kind == "error" and message["code"] == "ERR_REJECTED":
            pending = state.inflight if state is not None else None
            if state is not None and pending is not None and message.get("seq") == pending.seq:
                # Rejected: drop it and the buffer on top (as the clients do); their
                # markers are gone for good.
                sent = pending.sent.text()
                assert any(cursed(marker) for marker in sent), f"{self.id}: rejected {message}"
                buffered = state.buffer.text() if state.buffer is not None else ""
                self.world.forgiven.update(sent + buffered)
                self.world.rejected.add((self.key, pending.seq))
                state.discard_pending()
            else:
                self.world.stats["stale_rejections"] += 1  # a duplicate's, already dropped
        elif kind == "error":
            pending = state.inflight if state is not None else None
            if (
                message["code"] == "ERR_STORAGE"
                and pending is not None
                and message.get("seq") == pending.seq
            ):
                # Not applied: resend the same (seq, base, op) a little later.
                self.world.stats["storage_errors"] += 1
                self.world.loop.call_later(
                    self.world.rng.uniform(0, 0.5), self.world.guard(self._retry), pending.seq
                )
            elif message["code"] == "ERR_STORAGE" and (
                (self.key, message.get("seq")) in self.acked or self.world.tolerate_stale
            ):
                # A stale ERR_STORAGE for a duplicate of an op already acked (see
                # test_a_duplicate_of_a_durable_op_is_not_failed): clients ignore it.
                self.world.stats["stale_storage_errors"] += 1
                if (self.key, message.get("seq")) not in self.acked:
                    self.world.stale.append((self.key, message.get("seq")))
            else:
                raise SimFailure(f"{self.id}: unexpected error {message}")
        else:
            raise SimFailure(f"{self.id}: unexpected message {message}")

    def _retry(self, seq: int) -> None:
        state = self.state
        if state is not None and state.inflight is not None and state.inflight.seq == seq:
            message = state.resend()
            assert message is not None
            self.send(message)

    def _loaded(self, message: dict[str, Any]) -> None:
        assert self.state is not None
        self.live = True
        self.view.clear()
        for entry in message["presence"]:
            if entry["client"] != self.id:
                self._remember(self.state, entry)

    def _remember(self, state: ClientState, wire: dict[str, Any]) -> None:
        raw = wire["cursor"]
        cursor = None if raw is None else (raw["index"], raw["length"])
        state.set_remote_cursor(wire["client"], cursor, version=wire["v"])
        self.view[wire["client"]] = (cursor, wire["state"])

    def _record_ack(self, seq: int, version: int, sent: Delta) -> None:
        previous = self.acked.get((self.key, seq))
        if previous is not None and previous[0] != version:
            raise SimFailure(f"{self.key} seq {seq} acked as v{previous[0]} and as v{version}")
        self.acked[self.key, seq] = (version, sent)

    # -- acting -------------------------------------------------------------------------------

    def act(self) -> None:
        world = self.world
        rng = world.rng
        roll = rng.random()
        online = self.connection is not None
        if online and roll < world.shape.disconnect_rate:
            self.disconnect()
        elif not online and roll < 0.35:
            self.connect(fresh=rng.random() < world.shape.fresh_rate)
            if self.state is None:
                world.stats["fresh_rejoins"] += 1
        elif online and self.live and roll < 0.55:
            assert self.state is not None
            size = len(self.state.document)
            index = rng.randint(0, size)
            cursor = None if roll < 0.4 else (index, rng.randint(0, size - index))
            extra = {"color": rng.choice(["red", "blue"])} if roll < 0.45 else None
            self.send(self.state.presence_message(cursor, extra))
        elif self.state is not None:
            message = self.state.local_edit(self.random_edit(self.state.document))
            if message is not None:
                self.send(message)

    def random_edit(self, document: Document) -> Delta:
        rng = self.world.rng
        length = len(document)
        roll = rng.random()
        delta = Delta()
        if length == 0 or roll < 0.55 or (not self.world.shape.allow_delete and roll < 0.8):
            marker = MARKERS[len(self.world.markers)]
            self.world.markers.append(marker)
            self.world.typed.setdefault(self.key, set()).add(marker)
            text = marker + "".join(rng.choice(FILLER) for _ in range(rng.randint(0, 3)))
            attributes = {rng.choice(NAMES): True} if rng.random() < 0.2 else None
            return delta.retain(rng.randint(0, length)).insert(text, attributes)
        pos = rng.randint(0, length - 1)
        span = rng.randint(1, min(4, length - pos))
        if roll < 0.8:
            return delta.retain(pos).delete(span)
        return delta.retain(pos).retain(span, {rng.choice(NAMES): rng.choice([True, None])})


# -- the world --------------------------------------------------------------------------


class World:
    def __init__(self, shape: Shape, loop: VirtualLoop, *, reuse_ids: bool = False) -> None:
        self.shape = shape
        self.reuse_ids = reuse_ids
        self.loop = loop
        self.rng = random.Random(shape.seed)
        self.store = SimStore(self)
        # One seed in three has an ``authorize`` hook: it takes a random (virtual) while and
        # rejects every op inserting a "cursed" marker (one in seven), wherever it is resent.
        hooked = random.Random(f"session-sim-authorize-{shape.seed}")
        self.hook_delays = hooked.choice([(), (0.0, 0.01), (0.0, 0.2, 1.0)])
        self.manager = DocumentManager(
            ProcessStore(self.store),
            shape.settings,
            Metrics("sim"),
        )
        self.manager.authorize = self.authorize if self.hook_delays else None
        users = [f"u{i}" for i in range(shape.users)]
        self.clients = [SimClient(self, i, users[i % len(users)]) for i in range(shape.clients)]
        self.markers: list[str] = []
        #: Markers each client key typed; a lost tab's unacknowledged ones are ``forgiven``.
        self.typed: dict[str, set[str]] = {}
        self.forgiven: set[str] = set()
        self.dead_managers: list[DocumentManager] = []
        self.armed = False
        self.starting: asyncio.Task[None] | None = None
        self.stats: Counter[str] = Counter()
        self.in_flight = 0
        #: ERR_STORAGE for a seq not acked yet when it came; checked against the log at the end.
        self.tolerate_stale = True
        self.stale: list[tuple[str, Any]] = []
        #: (client key, seq) of every op its client saw rejected: never in the log. A
        #: duplicate sent before the rejection came is sequenced (and asked) on its own,
        #: so a storage failure may refuse it after the rejection: a stale ERR_STORAGE.
        self.rejected: set[tuple[str, int]] = set()
        self.failure: BaseException | None = None

    def arm(self) -> None:
        """Cut the power soon after the next commit."""
        self.armed = True

    def power_loss(self) -> None:
        """The power fails: unsynced ops vanish, every socket dies, the server restarts."""
        self.in_flight -= 1
        durable = self.store.durable
        lost = self.store.power_loss()
        self.stats["power_losses"] += 1
        self.stats["ops_lost_to_power"] += len(lost)
        for client in self.clients:
            if client.state is not None and client.state.version > durable:
                self.stats["clients_saw_lost_ops"] += 1
            if client.connection is not None:
                client.connection.drop(abrupt=True)
                client.connection = None
                client.live = False
            # Reconnects come back at random: some before the head passes them again.
            self.loop.call_later(self.rng.uniform(0, 5), self.guard(client.reconnect))
        self.dead_managers.append(self.manager)
        self.manager = DocumentManager(
            ProcessStore(self.store), self.shape.settings, Metrics("sim")
        )
        self.manager.authorize = self.authorize if self.hook_delays else None
        self.starting = self.loop.create_task(self.manager.start())

    async def authorize(self, request: AuthorizeRequest) -> Rejected | None:
        """The sim's ``authorize`` hook (see ``__init__``)."""
        self.stats["authorize_calls"] += 1
        await asyncio.sleep(self.rng.choice(self.hook_delays))
        if any(cursed(marker) for marker in request.op.text()):
            self.stats["rejections"] += 1
            return Rejected("cursed", "a cursed marker")
        return None

    def guard(self, callback: Any) -> Any:
        """Run ``callback`` and keep the first exception as the run's failure."""

        def run(*args: Any) -> None:
            if self.failure is not None:
                return
            try:
                callback(*args)
            except BaseException as exc:  # noqa: BLE001 - reported by the driver
                self.failure = exc

        return run

    def transmit(self, last: float, arrive: Any, payload: str) -> float:
        """Deliver ``payload`` after a random delay, never before the previous frame."""
        # Strictly after the previous frame: the loop's timer heap does not keep ties in order.
        at = max(self.loop.time() + self.rng.expovariate(1 / self.shape.delay), last + 1e-6)
        self.in_flight += 1

        def deliver() -> None:
            self.in_flight -= 1
            arrive(payload)

        self.loop.call_at(at, self.guard(deliver))
        return at

    def on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if self.failure is None:
            self.failure = context.get("exception") or SimFailure(context["message"])

    def settled(self) -> bool:
        session = self.manager.sessions.get(DOC)
        return (
            self.in_flight == 0
            and all(c.live and c.state is not None and c.state.synchronized for c in self.clients)
            and all(c.connection is not None and c.connection.inbox.empty() for c in self.clients)
            and session is not None
            and not session.busy
        )

    async def run(self) -> None:
        self.loop.set_exception_handler(self.on_loop_error)
        await self.store.open()
        await self.manager.start()
        rng = self.rng
        for at in self.shape.power_losses:
            self.loop.call_at(at, self.guard(self.arm))
        for index, client in enumerate(self.clients):
            if self.shape.far_behind and index == 0:
                # Far behind: offline typing from the start, back only at the end.
                client.state = ClientState(DOC, client.id, content=Document(), version=0)
                for _ in range(rng.randint(1, 4)):
                    self.loop.call_at(rng.uniform(0, HORIZON), self.guard(client.act))
                continue
            client.connect()
            for _ in range(self.shape.actions):
                self.loop.call_at(rng.uniform(0, HORIZON), self.guard(client.act))
        await asyncio.sleep(HORIZON + 0.5)
        self.armed = False
        await self.wait(lambda: self.failure is not None or self.in_flight == 0, "drain")
        for client in self.clients:
            if client.connection is None:
                client.connect()
        await self.wait(lambda: self.failure is not None or self.settled(), "settle")
        # A last presence from everyone, then let the coalescing timer flush.
        for client in self.clients:
            assert client.state is not None
            size = len(client.state.document)
            index = rng.randint(0, size)
            client.send(client.state.presence_message((index, rng.randint(0, size - index))))
        await self.wait(lambda: self.failure is not None or self.in_flight == 0, "presence")
        await asyncio.sleep(self.shape.settings.presence_interval * 4)
        await self.wait(lambda: self.failure is not None or self.in_flight == 0, "presence")
        if self.failure is not None:
            raise self.failure
        # No await that yields from here: the checks see one instant of the world.
        await self.check()

    async def wait(self, done: Any, what: str) -> None:
        deadline = self.loop.time() + SETTLE_LIMIT
        while not done():
            if self.loop.time() > deadline:
                raise SimFailure(f"did not {what} within {SETTLE_LIMIT} virtual seconds")
            await asyncio.sleep(0.1)
        if self.failure is not None:
            raise self.failure

    async def check(self) -> None:
        session = self.manager.sessions[DOC]
        head = session.committed_version
        records: list[OpRecord] = await self.store.get_ops(DOC, 0)
        assert [r.version for r in records] == list(range(1, head + 1)), "version gap in the log"
        replayed = Document()
        for record in records:
            replayed = replayed.apply(record.op)
        assert replayed == session.committed_document, "the log does not replay to the document"
        loaded = await self.store.load(DOC)
        reloaded = Document(loaded.snapshot.content) if loaded.snapshot else Document()
        for record in loaded.ops:
            reloaded = reloaded.apply(record.op)
        assert reloaded == replayed, "snapshot + ops differ from the log"
        logged = Counter((r.client_id, r.seq) for r in records if r.seq is not None)
        assert max(logged.values(), default=1) == 1, "an op was committed twice"
        where = {(r.client_id, r.seq): r.version for r in records if r.seq is not None}
        for client in self.clients:
            state = client.state
            assert state is not None and client.live, f"{client.id} never caught up"
            assert state.synchronized, f"{client.id} still has ops pending"
            assert state.version == head, f"{client.id} at v{state.version}, server at v{head}"
            assert state.document == replayed, f"{client.id} diverged"
            assert state.confirmed == replayed, f"{client.id}'s confirmed document diverged"
            for (key, seq), (version, sent) in client.acked.items():
                committed = where.get((key, seq))
                if committed is not None:
                    assert committed == version, (
                        f"{key} seq {seq}: ack v{version}, log v{committed}"
                    )
                else:
                    # Acked without a version: only an op that changed nothing may be.
                    assert not any(isinstance(op, Insert) for op in sent.ops), (
                        f"{key} seq {seq} lost"
                    )
                    assert version <= head
        for key, seq in self.rejected:
            assert (key, seq) not in where, f"{key} seq {seq} was rejected, and it is in the log"
        for key, seq in self.stale:  # a stale error is fine for an op committed or rejected
            assert (key, seq) in where or (key, seq) in self.rejected, (
                f"ERR_STORAGE for {key} seq {seq}, and it is not in the log"
            )
        text = replayed.text()
        acked_inserts = {
            ch
            for client in self.clients
            for _, sent in client.acked.values()
            for op in sent.ops
            if isinstance(op, Insert)
            for ch in op.text[:1]
        }
        for marker in self.markers:
            count = text.count(marker)
            assert not (count and self.hook_delays and cursed(marker)), f"{marker!r} rejected"
            assert count <= 1, f"insert {marker!r} doubled"
            if not self.shape.allow_delete and marker in acked_inserts:
                assert count == 1, f"acked insert {marker!r} vanished"
            if not self.shape.allow_delete and marker not in self.forgiven:
                assert count == 1, f"insert {marker!r} vanished (its client kept its state)"
        # Presence: the server's table is everyone connected; each client sees the others.
        table = {entry.client: entry for entry in session.presence}
        members = {peer.client for peer in session.members}
        assert members == {c.id for c in self.clients}, "a connected client is not a member"
        # Everyone sent a last presence; an entry may have expired since (silence timeout).
        assert set(table) <= members, "presence of a client that is not here"
        self.stats["final_presence"] += len(table)
        size = len(replayed)
        for client in self.clients:
            assert client.state is not None
            expected = {}
            for other, entry in table.items():
                if other == client.id:
                    continue
                cursor = entry.cursor
                assert cursor is None or cursor.index + cursor.length <= size
                expected[other] = (
                    None if cursor is None else (cursor.index, cursor.length),
                    entry.state,
                )
            seen = {
                other: (client.state.remote_cursor(other), view_state)
                for other, (_, view_state) in client.view.items()
            }
            assert seen == expected, f"{client.id} sees presence {seen}, server has {expected}"
        self.stats["versions"] += head


def cursed(marker: str) -> bool:
    """Does the sim's ``authorize`` hook reject an op inserting ``marker``?"""
    return marker in MARKER_SET and (ord(marker) - 0x4E00) % 7 == 3


def simulate(seed: int, *, reuse_ids: bool = False) -> Counter[str]:
    loop = VirtualLoop()
    world = World(shape_for(seed), loop, reuse_ids=reuse_ids)
    run_virtual(loop, world.run())
    return world.stats


def run_virtual(loop: VirtualLoop, main: Any) -> Any:
    """Run ``main`` on ``loop`` with ``tandem.session`` on the virtual clock; then clean up."""
    asyncio.set_event_loop(loop)
    try:
        with virtual_time(loop):
            return loop.run_until_complete(main)
    finally:
        # Cancel what is left (a livelocked session keeps spawning tasks: repeat).
        for _ in range(10):
            tasks = asyncio.all_tasks(loop)
            if not tasks:
                break
            for task in tasks:
                task.cancel()
            loop.spins = 0
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        asyncio.set_event_loop(None)
        loop.close()


def run_seeds(seeds: Iterable[int]) -> Counter[str]:
    replay = os.environ.get("TANDEM_SEED")
    totals: Counter[str] = Counter()
    for seed in [int(replay)] if replay else seeds:
        try:
            totals.update(simulate(seed))
        except BaseException as error:
            detail = "".join(traceback.format_exception(error)[-6:])
            print(f"\nsession simulation failed: TANDEM_SEED={seed}\n{detail}", file=sys.stderr)
            raise AssertionError(f"{error!r} (replay with TANDEM_SEED={seed})") from error
        totals["seeds"] += 1
    return totals


def seed_range(default: int) -> range:
    start = int(os.environ.get("TANDEM_SIM_START", "0"))
    return range(start, start + int(os.environ.get("TANDEM_SIM_SEEDS", default)))


def test_session_simulation() -> None:
    started = time.perf_counter()
    seeds = with_fresh_seeds(
        seed_range(SEEDS), 100, name="session simulation", replay="TANDEM_SEED"
    )
    totals = run_seeds(seeds)
    print(f"{totals['seeds']} seeds in {time.perf_counter() - started:.1f}s: {dict(totals)}")
    if not os.environ.get("TANDEM_SEED") and totals["seeds"] >= 500:
        # Guard against a driver that quietly avoids the hard paths.
        for what in (
            "disconnects",
            "resends",
            "duplicate_submits",
            "fresh_rejoins",
            "long_catchups",
            "storage_errors",
            "presence_left",
            "loads",
            "final_presence",
            "ops_lost_to_power",
            "clients_saw_lost_ops",
            "carried_pending",
            "rejections",
        ):
            assert totals[what] > 20, f"too few {what}: {dict(totals)}"


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
def test_session_simulation_long() -> None:
    run_seeds(range(SEEDS, SEEDS + SLOW_SEEDS))


# -- found by the simulation: a client that lost its state but kept its id -------------------------


class Recorder:
    """A ``Peer`` that keeps what it is sent."""

    def __init__(self, client: str, user: str) -> None:
        self.client, self.user, self.name = client, user, user
        self.messages: list[dict[str, Any]] = []

    def send(self, message: str) -> None:
        self.messages.append(orjson.loads(message))


async def _reloaded_document(limit: float) -> tuple[DocumentManager, DocumentSession]:
    """c1@u1 commits seqs 1-3 (a snapshot is written at v2); the idle document is unloaded,
    and opened again from the snapshot."""
    store = MemoryStore()
    await store.open()
    settings = Settings(
        node_id="sim",
        data_dir=__import__("pathlib").Path("unused"),
        snapshot_every=2,
        document_idle_unload=1.0,
    )
    manager = DocumentManager(store, settings, Metrics("sim"))
    await manager.start()
    session = await manager.open(DOC)
    old = Recorder("c1", "u1")
    await session.join(old, "write", None)
    for seq in (1, 2, 3):
        await session.submit(session.member(old), Delta().insert(f"{seq}"), None, seq)
    while sum(m["type"] == "ack" for m in old.messages) < 3:
        await asyncio.sleep(0.01)
    session.leave(old)
    while DOC in manager.sessions:
        await asyncio.sleep(0.1)
    return manager, await manager.open(DOC)


def test_snapshot_last_seq_survives_a_reload() -> None:
    async def scenario() -> None:
        manager, session = await _reloaded_document(60)
        fresh = Recorder("c1", "u1")
        await session.join(fresh, "write", None)
        assert fresh.messages[0]["type"] == "snapshot"
        assert fresh.messages[0]["last_seq"] == 3

    run_virtual(VirtualLoop(), scenario())


def test_a_reused_seq_after_a_reload_does_not_wedge_the_document() -> None:
    async def scenario() -> None:
        manager, session = await _reloaded_document(60)
        fresh, other = Recorder("c1", "u1"), Recorder("c2", "u2")
        await session.join(fresh, "write", None)
        await session.join(other, "write", None)
        await session.submit(session.member(fresh), Delta().insert("again"), None, 1)
        await session.submit(session.member(other), Delta().insert("other"), None, 1)
        deadline = asyncio.get_running_loop().time() + 30
        while not any(m["type"] == "ack" for m in other.messages):
            assert asyncio.get_running_loop().time() < deadline, "the document is wedged"
            await asyncio.sleep(0.1)
        acks = [m for m in fresh.messages if m["type"] == "ack"]
        assert acks and acks[0]["v"] == 1, "seq 1 was committed as version 1: a duplicate"

    run_virtual(VirtualLoop(), scenario())


class _GatedStore(MemoryStore):
    """Appends wait for ``gate``; the append of version ``fail_version`` fails."""

    def __init__(self, fail_version: int) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.fail_version = fail_version

    async def append(self, records: Any) -> None:
        await self.gate.wait()
        if any(record.version == self.fail_version for record in records):
            raise StorageError("injected failure")
        await super().append(records)


async def _session_on(store: MemoryStore) -> DocumentSession:
    """``DOC``'s session on ``store`` (opened here), with default settings."""
    await store.open()
    settings = Settings(node_id="sim", data_dir=__import__("pathlib").Path("unused"))
    manager = DocumentManager(store, settings, Metrics("sim"))
    await manager.start()
    return await manager.open(DOC)


async def _pair_on(store: MemoryStore) -> tuple[DocumentSession, Recorder, Recorder]:
    """``_session_on(store)`` with two writers joined: c1 (the author) and c2."""
    session = await _session_on(store)
    author, other = Recorder("c1", "u1"), Recorder("c2", "u2")
    await session.join(author, "write", None)
    await session.join(other, "write", None)
    return session, author, other


def test_a_duplicate_of_a_durable_op_is_not_failed() -> None:
    async def scenario() -> None:
        store = _GatedStore(fail_version=2)
        session, author, other = await _pair_on(store)
        await session.submit(session.member(author), Delta().insert("a"), 0, 7)  # v1
        await asyncio.sleep(0.01)  # the committer takes v1 and waits at the gate
        await session.submit(session.member(other), Delta().insert("b"), 0, 1)  # v2
        await session.submit(session.member(author), Delta().insert("a"), 0, 7)  # duplicate
        store.gate.set()
        await asyncio.sleep(1)
        replies = [m for m in author.messages if m["type"] in ("ack", "error")]
        assert replies[0] == {"type": "ack", "doc": DOC, "seq": 7, "v": 1}
        assert [m["type"] for m in replies] == ["ack", "ack"], replies

    run_virtual(VirtualLoop(), scenario())


async def _gated_session() -> tuple[_GatedStore, DocumentSession]:
    store = _GatedStore(fail_version=-1)
    return store, await _session_on(store)


def test_a_rejoining_client_waits_for_its_op_still_being_stored() -> None:
    """Its catch-up shows the op: else it is in neither the catch-up nor an ack, and a
    client that merges its branch on re-join would send the op's text a second time."""

    async def scenario() -> None:
        store, session = await _gated_session()
        old = Recorder("c1", "u1")
        await session.join(old, "write", None)
        await session.submit(session.member(old), Delta().insert("abc"), 0, 1)  # v1, gated
        session.leave(old)  # the connection drops with the op in flight
        new = Recorder("c1", "u1")
        join = asyncio.ensure_future(session.join(new, "write", 0))
        await asyncio.sleep(0.05)
        assert not join.done(), "the catch-up was built while the client's op was in flight"
        store.gate.set()
        await join
        catchup = new.messages[0]
        assert catchup["type"] == "catchup" and catchup["v"] == 1
        assert [(op["v"], op["client"], op["seq"]) for op in catchup["ops"]] == [(1, "c1", 1)]

    run_virtual(VirtualLoop(), scenario())


def test_a_resent_merge_is_answered_once_its_first_copy_is_stored() -> None:
    """Answered against the durable head before that, the reply would undo the branch."""

    async def scenario() -> None:
        store, session = await _gated_session()
        author = Recorder("c1", "u1")
        await session.join(author, "write", None)
        branch = [Delta().insert("hello"), Delta().retain(5).insert(" world")]
        await session.offline.merge(session.member(author), 0, 9, branch)  # v1, gated
        resent = asyncio.ensure_future(session.offline.merge(session.member(author), 0, 9, branch))
        for _ in range(50):
            await asyncio.sleep(0.01)
            await asyncio.to_thread(lambda: None)  # let a reply computed in a thread land
        assert not any(m["type"] == "merged" for m in author.messages), author.messages
        store.gate.set()
        await resent
        await asyncio.sleep(0.05)
        replies = [m for m in author.messages if m["type"] == "merged"]
        assert [m["v"] for m in replies] == [1, 1], replies
        final = Document("hello world")  # the author's branch, applied to the base
        for reply in replies:
            assert final.apply(Delta.from_json(reply["op"])).text() == "hello world"
        assert session.committed_document.text() == "hello world"

    run_virtual(VirtualLoop(), scenario())


def test_a_sync_step2_waits_until_what_it_carries_is_stored() -> None:
    """Else a crash could lose items a Yjs client already has, and the server would
    reuse their ids for other text: that client could never converge again."""

    async def scenario() -> None:
        store, session = await _gated_session()
        link = FrameLink()
        tandem = SimpleNamespace(
            documents=session.host, metrics=session.host.metrics, settings=session.settings
        )
        await link.join(tandem, DOC, "write")  # type: ignore[arg-type]
        author = Recorder("c1", "u1")
        await session.join(author, "write", None)
        await session.submit(session.member(author), Delta().insert("abc"), 0, 1)  # gated
        answer = asyncio.ensure_future(link.handle(yproto.sync_step1(Doc().get_state())))
        await asyncio.sleep(0.05)
        assert not answer.done() and not any(m.sub == yproto.SYNC_STEP2 for m in link.frames)
        store.gate.set()
        await answer
        step2 = [m for m in link.frames if m.sub == yproto.SYNC_STEP2]
        assert len(step2) == 1
        client = Doc()
        client.apply_update(step2[0].payload)
        assert str(client.get("content", type=Text)) == "abc"
        assert session.committed_version == 1

    run_virtual(VirtualLoop(), scenario())


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="long mode of the session simulation")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=SLOW_SEEDS)
    args = parser.parse_args()
    import logging

    logging.getLogger("tandem").setLevel(logging.CRITICAL)  # injected store failures log errors
    began = time.perf_counter()
    result: Counter[str] = Counter()
    failed: list[int] = []
    for seed in range(args.start, args.start + args.count):
        try:
            result.update(run_seeds(range(seed, seed + 1)))
        except AssertionError as error:  # keep going: report every failing seed
            failed.append(seed)
            print(f"FAILED TANDEM_SEED={seed}: {error}", flush=True)
    print(
        f"seeds {args.start}..{args.start + args.count - 1}: {result['seeds']} passed, "
        f"{len(failed)} failed {failed} in {time.perf_counter() - began:.0f}s {dict(result)}"
    )
    sys.exit(1 if failed else 0)


# -- committed, then synced: broadcast at once, ack after the fsync -------------------------------


class _HandSyncedStore(MemoryStore):
    """Commits at once; each commit's sync completes only when ``sync_next`` says so."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[asyncio.Future[None]] = []

    async def commit(self, records: Any) -> asyncio.Future[None] | None:
        await self.append(records)
        synced: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.syncs.append(synced)
        return synced

    def sync_next(self, exc: BaseException | None = None) -> None:
        synced = self.syncs.pop(0)
        if exc is None:
            synced.set_result(None)
        else:
            synced.set_exception(exc)


async def _hand_synced_pair() -> tuple[_HandSyncedStore, DocumentSession, Recorder, Recorder]:
    store = _HandSyncedStore()
    return (store, *await _pair_on(store))


async def _type(session: DocumentSession, peer: Recorder, text: str, base: int, seq: int) -> None:
    """``peer`` submits an insert of ``text``; returns once the loop has handled it."""
    await session.submit(session.member(peer), Delta().insert(text), base, seq)
    await asyncio.sleep(0.01)


def test_others_hear_a_committed_op_before_its_author_hears_the_ack() -> None:
    async def scenario() -> None:
        store, session, author, other = await _hand_synced_pair()
        await _type(session, author, "a", 0, 1)  # v1
        assert [m["type"] for m in other.messages[1:]] == ["op"], "committed: broadcast"
        assert [m["type"] for m in author.messages[1:]] == [], "not synced: no ack yet"
        # The other client's op v2 is committed before v1 is synced: the author must
        # not hear of v2 before its own ack (its client would transform v2 past v1).
        await _type(session, other, "b", 1, 1)  # v2
        assert [m["type"] for m in author.messages[1:]] == []
        assert [m["type"] for m in other.messages[1:]] == ["op"], "v2 is other's own"
        store.sync_next()  # v1 is on disk
        await asyncio.sleep(0.01)
        assert [(m["type"], m["v"]) for m in author.messages[1:]] == [("ack", 1), ("op", 2)]
        assert [m["type"] for m in other.messages[1:]] == ["op"], "v2's ack waits for its sync"
        store.sync_next()
        await asyncio.sleep(0.01)
        assert [(m["type"], m["v"]) for m in other.messages[1:]] == [("op", 1), ("ack", 2)]
        assert session.synced_version == session.committed_version == 2

    run_virtual(VirtualLoop(), scenario())


def test_a_failed_sync_acknowledges_nothing_and_later_ops_fail() -> None:
    async def scenario() -> None:
        store, session, author, other = await _hand_synced_pair()
        await _type(session, author, "a", 0, 1)  # v1
        await _type(session, other, "b", 1, 1)  # v2
        store.sync_next(StorageError("EIO"))
        await asyncio.sleep(0.01)
        replies = [m for m in author.messages[1:] if m["type"] in ("ack", "error")]
        assert [(m["type"], m.get("code")) for m in replies] == [("error", "ERR_STORAGE")]
        assert [(m["type"], m["v"]) for m in author.messages[1:] if m["type"] == "op"] == [
            ("op", 2)
        ], "released once the ack it waited behind failed"
        # A duplicate of the committed op cannot be acknowledged either.
        await _type(session, author, "a", 0, 1)
        assert author.messages[-1]["type"] == "error"
        assert author.messages[-1]["code"] == "ERR_STORAGE"

    run_virtual(VirtualLoop(), scenario())


def test_acks_and_ops_reach_an_author_in_version_order_when_one_sync_covers_them() -> None:
    async def scenario() -> None:
        store, session, author, other = await _hand_synced_pair()
        await _type(session, author, "a", 0, 1)  # v1
        await _type(session, other, "b", 1, 1)  # v2
        await _type(session, author, "c", 1, 2)  # v3
        await _type(session, other, "d", 3, 2)  # v4
        assert author.messages[1:] == []
        store.syncs[-1].set_result(None)  # the last sync covers every commit before it
        await asyncio.sleep(0.01)
        assert [(m["type"], m["v"]) for m in author.messages[1:]] == [
            ("ack", 1),
            ("op", 2),
            ("ack", 3),
            ("op", 4),
        ]

    run_virtual(VirtualLoop(), scenario())


# -- a re-join from another history (docs/protocol.md, "Re-joining from another history") ----


def test_a_rejoin_gets_a_catchup_only_for_the_same_history() -> None:
    """The join's ``h`` is checked against this history's document at ``v``: a match is
    answered with a catch-up (also below the snapshot, rebuilt from storage), a mismatch
    (ops lost to a power loss, a restore) with a snapshot."""

    async def scenario() -> None:
        _, session = await _reloaded_document(60)
        at_one, head = Document("1"), session.committed_document
        for version, fingerprint, expected in (
            (1, at_one.fingerprint(), "catchup"),
            (1, Document("x").fingerprint(), "snapshot"),
            (3, head.fingerprint(), "catchup"),
            (3, at_one.fingerprint(), "snapshot"),
            (1, None, "catchup"),  # a client that sends no ``h`` is trusted, as before
        ):
            peer = Recorder("c9", "u9")
            await session.join(peer, "write", version, fingerprint)
            assert peer.messages[0]["type"] == expected, (version, fingerprint)
            session.leave(peer)

    run_virtual(VirtualLoop(), scenario())

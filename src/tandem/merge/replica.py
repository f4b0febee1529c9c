"""The CRDT replica: a pycrdt ``Doc`` whose text always equals the OT document.

Every committed op is applied to the replica in version order (at once, or
later with the ops before it: ``tandem.merge.backlog``). An op made by an OT
client becomes Yrs changes authored by the replica's client id and is stored
with the update that made (or, where re-applying its delta is deterministic —
no attributes, a replica that never held formatting, ``format_free`` — may be
stored without); an op that came from a Yjs client is replayed as the very Yjs
update that produced it (the *effective* update, as observed when it was
merged). That makes the replica a deterministic function of (initial state,
op log):

* after a restart, loading the CRDT state stored in the newest snapshot and
  replaying the ops after it rebuilds byte-identical items — the Y.Doc is never
  re-seeded from plain text, so a Yjs client back after a week merges against
  the same item identities and duplicates nothing;
* on several nodes every node applies the same log in the same order, so every
  node holds the same items (a Yjs client may reconnect to any of them).

The replica counts the ``version`` of the last op applied to it. A document
that never had a replica is seeded once from its content at a version (a
single insert by ``SERVER_CLIENT_ID``); that is deterministic too, and it is
persisted with the next snapshot.

pycrdt pitfalls handled here (see ``translate``): UTF-8 byte indexes, inherited
formatting on insert, Yrs panics raised as ``BaseException`` (turned into
``ReplicaError``; the replica is then unusable and must be rebuilt), and
updates with missing dependencies (refused: Yrs would keep them pending, an
unrecorded state).

Pure: must not import asyncio, storage, bus or network code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from pycrdt import Doc, Text, TextEvent, TransactionEvent

from tandem.merge.plaintext import PlainText
from tandem.merge.translate import (
    apply_delta,
    apply_to_text,
    delta_from_event,
    normalize_attributes,
)
from tandem.merge.updates import clock_ends, holds_formats, missing_dependency
from tandem.merge.yproto import ProtocolError
from tandem.ot.compose import compose
from tandem.ot.delta import Delta, Insert
from tandem.ot.document import Document
from tandem.records import OpRecord

__all__ = [
    "EMPTY_UPDATE",
    "UpdateRefused",
    "Replica",
    "ReplicaError",
    "SERVER_CLIENT_ID",
    "TEXT_NAME",
    "carries_formats",
    "replay_record",
    "update_formats",
]

#: The Yjs client id of every change the server makes (OT ops, seeding).
SERVER_CLIENT_ID: Final = 1
#: The shared type Yjs clients bind: ``ydoc.getText("content")``.
TEXT_NAME: Final = "content"
#: A v1 update that changes nothing.
EMPTY_UPDATE: Final = b"\x00\x00"

T = TypeVar("T")

#: Bytes that may start a struct with a ``ContentFormat`` (info byte ``& 0x1F == 6``).
#: An update with none of them holds no formatting item (no need to decode it).
_MAYBE_FORMAT: Final = re.compile(rb"[\x06\x26\x46\x66\x86\xa6\xc6\xe6]")


def carries_formats(delta: Delta) -> bool:
    """Does any component of ``delta`` set attributes?"""
    # A loop, not any(...): no generator per committed op.
    for component in delta.ops:  # noqa: SIM110
        if getattr(component, "attributes", None):
            return True
    return False


def update_formats(update: bytes) -> bool:
    """Does the v1 ``update`` insert a formatting item? (True when it does not decode.)"""
    if _MAYBE_FORMAT.search(update) is None:
        return False
    try:
        return holds_formats(update)
    except (ValueError, UnicodeDecodeError):
        return True


class ReplicaError(Exception):
    """Yrs failed or disagreed with the replica's checks: the replica must be rebuilt."""


class UpdateRefused(ReplicaError):
    """A Yjs update refused *before* it was applied (missing dependencies, forged ids).

    The replica is unchanged and stays usable; nothing needs rebuilding.
    """


def _guard(call: Callable[[], T]) -> T:
    """Run a Yrs call, turning a Rust panic (a ``BaseException``) into ``ReplicaError``."""
    try:
        return call()
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except ReplicaError:
        raise
    except BaseException as exc:  # noqa: BLE001 - pyo3 PanicException is a BaseException
        raise ReplicaError(f"yrs failed: {type(exc).__name__}: {exc}") from None


class Replica:
    """A Y.Doc mirroring one document's committed history."""

    def __init__(
        self, state: bytes | None = None, version: int = 0, client_id: int = SERVER_CLIENT_ID
    ) -> None:
        #: The Yjs client id this replica writes with (one per incarnation, see
        #: ``storage/incarnations.py``; ``SERVER_CLIENT_ID`` before incarnations).
        self.client_id = client_id
        self.doc: Doc[Any] = Doc(client_id=client_id)
        self.text: Text = self.doc.get(TEXT_NAME, type=Text)
        self.version = version
        self._update = EMPTY_UPDATE
        self._events: list[list[dict[str, Any]]] = []
        #: The origin of the one transaction ``replay_all`` applies ops in.
        self._origin: str | None = None
        self.doc.observe(self._on_transaction)
        # Text events are observed only while merging a Yjs update (``merge``):
        # pycrdt builds an event object for every transaction a subscriber is
        # attached to, ~5% of the loop's time per committed op when always on.
        #: Has this Y.Doc never held a formatting item? Then applying a delta
        #: without attributes is deterministic: an insert inherits no formatting,
        #: so Yrs writes no format items (whose order, for an insert negating
        #: several inherited attributes, follows hash-map iteration). Such an op
        #: needs no stored update to replay identically (see ``ReplicaHost.stamp``).
        self.format_free = True
        if state:
            _guard(lambda: self.doc.apply_update(state))
            self.format_free = not update_formats(state)
        #: The plain text, kept in Python to convert offsets without asking Yrs.
        self.plain = PlainText(str(self.text))

    @classmethod
    def seeded(
        cls, content: Delta | Document, version: int, client_id: int = SERVER_CLIENT_ID
    ) -> Replica:
        """A replica for a document that has none yet: its content as one server change."""
        replica = cls(version=version, client_id=client_id)
        delta = content.to_delta() if isinstance(content, Document) else content
        if delta.ops:
            replica.apply(delta, version)
        return replica

    # -- callbacks ------------------------------------------------------------

    def _on_transaction(self, event: TransactionEvent) -> None:
        self._update = event.update

    def _on_text(self, event: TextEvent) -> None:
        self._events.append(list(getattr(event, "delta")))  # noqa: B009 - untyped in pycrdt

    # -- changing -------------------------------------------------------------

    def apply(self, delta: Delta, version: int) -> bytes:
        """Apply an op committed as ``version`` (made by an OT client); returns its update."""
        self._update = EMPTY_UPDATE
        old = self.plain

        def run() -> PlainText:
            with self.doc.transaction(origin=self._origin or "tandem"):
                return apply_delta(self.text, None, old, delta)

        self.plain = _guard(run)
        self.version = version
        if self.format_free and carries_formats(delta):
            self.format_free = False
        return self._update

    def merge(self, update: bytes) -> tuple[Delta, bytes]:
        """Merge a Yjs update; returns the text change (code points) and the effective update.

        The effective update is what actually changed (``EMPTY_UPDATE`` for a
        duplicate); storing it and replaying it reproduces this merge exactly.
        The caller records the change as the next version (``advance``).
        """
        before = self._state_vector()
        try:
            wanted = clock_ends(update)  # before applying: a malformed update changes nothing
            missing = missing_dependency(update, before)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed Yjs update: {exc}") from None
        if missing is not None:
            # Refused untouched: Yrs would keep it pending, an unrecorded state that
            # it may even show at a wrong place or never integrate.
            client, clock = missing
            raise UpdateRefused(
                "the update depends on changes this document does not have "
                f"(client {client} clock {clock})"
            )
        if wanted.get(self.client_id, 0) > before.get(self.client_id, 0):
            raise UpdateRefused("the update contains changes under the server's client id")
        self._update = EMPTY_UPDATE
        self._events = []
        old = str(self.plain)

        def run() -> None:
            with self.doc.transaction(origin="yjs"):
                self.doc.apply_update(update)

        listening = self.text.observe(self._on_text)
        try:
            _guard(run)
        finally:
            self.text.unobserve(listening)
        after = self._state_vector()
        for client, clock in wanted.items():
            if after.get(client, 0) < clock:
                # The check above said it would all fit: Yrs and the replica disagree.
                raise ReplicaError(
                    f"Yrs kept part of an update pending (client {client} clock "
                    f"{after.get(client, 0)} < {clock})"
                )
        delta = Delta()
        text = old
        for changes in self._events:
            step = delta_from_event(text, changes)
            text = apply_to_text(text, step)
            delta = compose(delta, step) if delta.ops else step
        self.plain = PlainText(text)
        if self.format_free and update_formats(self._update):
            self.format_free = False
        return delta, self._update

    def replay(self, update: bytes, version: int, op: Delta | None = None) -> None:
        """Apply the stored update of the op committed as ``version``.

        Every op committed since the replica stamps ops (``apply`` at sequencing
        time) carries the update that applying it produced, OT ops included:
        replaying those bytes rebuilds identical items, whereas re-applying a
        delta could not (Yrs orders the format markers of an insert that
        negates several inherited attributes by hash-map iteration). ``op`` is
        the op's delta, used to update the plain text without observing Yrs
        events; without it (older callers) the update is merged and checked
        like a Yjs update.
        """
        if op is None:
            self.merge(update)
            self.version = version
            return
        if self.format_free and (carries_formats(op) or update_formats(update)):
            self.format_free = False

        def run() -> None:
            with self.doc.transaction(origin=self._origin or "replay"):
                self.doc.apply_update(update)

        _guard(run)
        try:
            self.plain = self.plain.apply(op)
        except ValueError as exc:  # the op does not fit: this replica is not what it logged
            raise ReplicaError(f"replayed op v{version} does not fit the replica: {exc}") from None
        self.version = version

    def replay_all(self, records: Sequence[OpRecord]) -> None:
        """Apply committed ops (the next versions, in order) in one Yrs transaction.

        The same items as ``replay_record`` one op per transaction (a property
        test compares the states: ``tests/unit/merge/test_backlog.py``), for
        less: Yrs commits, cleans up and notifies once. An op without its
        update is applied from its delta; with one, its update is replayed.
        """
        if not records:
            return

        def run() -> None:
            self._origin = "catch-up"
            try:
                with self.doc.transaction(origin=self._origin):
                    for record in records:
                        if record.version != self.version + 1:
                            raise ReplicaError(
                                f"v{record.version} does not follow the replica's v{self.version}"
                            )
                        replay_record(self, record)
            finally:
                self._origin = None

        _guard(run)

    def advance(self, version: int) -> None:
        """Record that the last merge became ``version``."""
        self.version = version

    # -- reading --------------------------------------------------------------

    def state(self) -> bytes:
        """The whole CRDT state as one v1 update (what snapshots store)."""
        return _guard(lambda: self.doc.get_update())

    def state_vector(self) -> bytes:
        """The encoded state vector (a Yjs SyncStep1 payload)."""
        return _guard(lambda: self.doc.get_state())

    def diff(self, state_vector: bytes) -> bytes:
        """The update a peer with ``state_vector`` lacks (a SyncStep2 payload)."""
        return _guard(lambda: self.doc.get_update(state_vector))

    def content(self) -> Delta:
        """The formatted content as a delta of inserts (for checks and tests)."""
        delta = Delta()
        for chunk, attributes in self.text.diff():
            if not isinstance(chunk, str):
                raise ReplicaError("the replica holds an embed")
            delta.push(Insert(chunk, normalize_attributes(attributes)))
        return delta

    def clients(self) -> list[int]:
        """The Yjs client ids this replica holds items of."""
        return list(self._state_vector())

    def _state_vector(self) -> dict[int, int]:
        return _decode_state_vector(self.state_vector())


def _decode_state_vector(data: bytes) -> dict[int, int]:
    """Decode a v1 state vector: count, then (client, clock) varUint pairs."""
    values: list[int] = []
    position = 0
    while position < len(data):
        number, shift = 0, 0
        while True:
            byte = data[position]
            position += 1
            number |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        values.append(number)
    if not values:
        return {}
    count = values[0]
    return {values[1 + 2 * i]: values[2 + 2 * i] for i in range(count)}


def replay_record(replica: Replica, record: OpRecord) -> bytes:
    """Apply a committed op: its stored update (the same items), else its delta.

    Returns the update applied.
    """
    if record.crdt is not None:
        replica.replay(record.crdt, record.version, record.op)
        return record.crdt
    return replica.apply(record.op, record.version)

"""The client side of the protocol as a pure state machine: one document, no I/O.

Owns the local document, the last server version the client has seen, the op
in flight (with its ``seq`` and base version), the buffer of edits typed
meanwhile, and the document as the server has it at that version
(``confirmed``). It implements docs/protocol.md, "The client state machine"
(ot.js's three states)::

    Synchronized ──local edit──▶ AwaitingAck(inflight) ──local edit──▶ AwaitingAckWithBuffer
         ▲                             │ ack                                  │ ack: buffer becomes
         └─────────────────────────────┘                                      ▼ the new inflight
                                                                   AwaitingAck(buffer)

A fourth state, ``Merging``, covers docs/protocol.md, "Offline merge": when a
catch-up would be expensive to transform the pending edits through (see
``merge_cost``), the in-flight op and the buffer become one ``merge``::

    AwaitingAck(…) ──catch-up, cost ≥ merge_at──▶ Merging(branch, buffer)
                                                        │ merged
                                                        ▼
                                  AwaitingAck(buffer), or Synchronized if none

While merging, server ops are ignored (the ``merged`` reply includes them),
the version stays the branch's base, and local edits compose into the buffer;
a re-join resends the same ``merge`` (same ``seq``) unless the catch-up shows
it committed.

Methods take what arrived and return what to send (a message dict) or what to
apply to the editor (a ``Delta``); the connection does the sending. Errors
are raised: ``VersionGap`` when a server op or ack does not follow on from
the current version (re-join with ``v`` to catch up).

Must not import asyncio or any network code.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from tandem.errors import ProtocolError, VersionError
from tandem.ot.compose import compose
from tandem.ot.cursor import transform_selection
from tandem.ot.delta import Delta
from tandem.ot.diff import diff
from tandem.ot.document import Document
from tandem.ot.invert import invert
from tandem.ot.transform import Side, transform

__all__ = ["MERGE_AT", "ClientState", "Pending", "PendingMerge", "Status", "VersionGap"]

#: Server ops remembered for moving remote cursors sent at older versions.
HISTORY: Final = 256

#: Send the pending edits as one offline ``merge`` when a catch-up's ops times
#: the components of the pending edits (``merge_cost``) reach this. The plain
#: path transforms every pending component past every missed op, on the client
#: and again on the server; the measured break-even of the two server paths is
#: n·m ≈ 100 (docs/performance.md, "Offline merge"), and a composed buffer has
#: at least one component per scattered edit, so 1,000 keeps a 10× margin.
MERGE_AT: Final = 1_000


class VersionGap(VersionError):
    """A server op or ack does not follow on from the client's version: re-join with ``v``."""

    def __init__(self, message: str, *, expected: int, got: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got


class Status(enum.Enum):
    """The three states of docs/protocol.md."""

    SYNCHRONIZED = "synchronized"
    AWAITING_ACK = "awaiting_ack"
    AWAITING_ACK_WITH_BUFFER = "awaiting_ack_with_buffer"
    #: An offline ``merge`` is in flight (edits typed meanwhile are in the buffer).
    MERGING = "merging"


@dataclass(frozen=True, slots=True)
class Pending:
    """The op in flight: rebased as server ops arrive, but its ``seq`` and ``base_version``
    stay those it was first sent with, so a resend after a reconnect is recognised."""

    op: Delta
    seq: int
    base_version: int
    #: The op as first sent; resends repeat it unchanged with ``base_version``.
    sent: Delta


@dataclass(frozen=True, slots=True)
class PendingMerge:
    """An offline branch in flight as one ``merge``: resent unchanged until answered."""

    #: The in-flight op and the buffer, composed: based on ``base_version``.
    op: Delta
    seq: int
    base_version: int
    #: The branch's final state (base + ``op``): the ``merged`` reply's op applies to it.
    final: Document


class ClientState:
    """One client's view of one document (see the module docstring).

    ``document`` is what the user sees: ``confirmed`` with the in-flight op (or
    the merge) and the buffer applied. ``version`` is the last server version
    applied. ``merge_at`` is the ``merge_cost`` from which a catch-up turns the
    pending edits into a ``merge`` (None: never).
    """

    def __init__(
        self,
        doc: str,
        client_id: str,
        *,
        content: Document | Delta | str | None = None,
        version: int = 0,
        first_seq: int = 1,
        merge_at: int | None = MERGE_AT,
    ) -> None:
        self.doc = doc
        self.client_id = client_id
        self.version = version
        self.confirmed = content if isinstance(content, Document) else Document(content)
        self.document = self.confirmed
        self.inflight: Pending | None = None
        self.buffer: Delta | None = None
        self.next_seq = first_seq
        self.merge_at = merge_at
        #: The offline ``merge`` in flight, if any (then ``inflight`` is None).
        self.merging: PendingMerge | None = None
        #: How many offline merges this state has started.
        self.merges = 0
        #: ``(version, op, client)`` of recent server ops, in server form.
        self._history: deque[tuple[int, Delta, str | None]] = deque(maxlen=HISTORY)
        #: Other clients' cursors ``(index, length)`` at ``version`` (server coordinates).
        self._remote: dict[str, tuple[int, int] | None] = {}

    # -- reading -------------------------------------------------------------

    @property
    def status(self) -> Status:
        """Which of the states the client is in."""
        if self.merging is not None:
            return Status.MERGING
        if self.inflight is None:
            return Status.SYNCHRONIZED
        if self.buffer is None:
            return Status.AWAITING_ACK
        return Status.AWAITING_ACK_WITH_BUFFER

    @property
    def synchronized(self) -> bool:
        """True when nothing is in flight, merging or buffered."""
        return self.inflight is None and self.merging is None

    @property
    def text(self) -> str:
        """The local document's plain text."""
        return self.document.text()

    # -- local edits ---------------------------------------------------------

    def local_edit(self, op: Delta) -> dict[str, Any] | None:
        """Apply a local edit; return the ``op`` message to send, or None if it was buffered.

        Raises ``OperationTooLong`` (and changes nothing) when ``op`` reaches
        past the end of the local document. Empty ops are ignored.
        """
        document = self.document.apply(op)
        if not op.ops:
            return None
        self.document = document
        if self.inflight is None and self.merging is None:
            self.inflight = Pending(op, self.next_seq, self.version, op)
            self.next_seq += 1
            return self._op_message(self.inflight)
        self.buffer = op if self.buffer is None else compose(self.buffer, op)
        return None

    def resend(self) -> dict[str, Any] | None:
        """What is in flight, as first sent (same ``seq``, same base version), for a reconnect.

        The ``merge`` message while merging, else the in-flight ``op``, else None.
        """
        if self.merging is not None:
            return self._merge_message(self.merging)
        return None if self.inflight is None else self._op_message(self.inflight)

    def _merge_message(self, merge: PendingMerge) -> dict[str, Any]:
        return {
            "type": "merge",
            "doc": self.doc,
            "v": merge.base_version,
            "seq": merge.seq,
            "ops": [merge.op.to_json()],
        }

    def _op_message(self, pending: Pending) -> dict[str, Any]:
        return {
            "type": "op",
            "doc": self.doc,
            "v": pending.base_version,
            "seq": pending.seq,
            "op": pending.sent.to_json(),
        }

    # -- server messages ---------------------------------------------------------

    def receive_op(self, version: int, op: Delta, client: str | None = None) -> Delta:
        """Apply someone else's op that produced ``version``; return the delta for the editor.

        Raises ``VersionGap`` unless ``version`` is the current version + 1.
        While merging, server ops are ignored (an empty delta is returned): the
        ``merged`` reply already contains them.
        """
        if self.merging is not None:
            return Delta()
        if version != self.version + 1:
            raise VersionGap(
                f"server op for version {version} but the client is at {self.version}",
                expected=self.version + 1,
                got=version,
            )
        #          server op S
        #   (pending) ─────────▶
        #     P │              │ P' = transform(P, S, "right")
        #       ▼              ▼
        #          S' = transform(S, P, "left")
        # once against the in-flight op, then against the buffer.
        incoming = op
        if self.inflight is not None:
            pending = self.inflight
            self.inflight = Pending(
                transform(pending.op, incoming, "right"),
                pending.seq,
                pending.base_version,
                pending.sent,
            )
            incoming = transform(incoming, pending.op, "left")
        if self.buffer is not None:
            buffer = self.buffer
            self.buffer = transform(buffer, incoming, "right")
            incoming = transform(incoming, buffer, "left")
        self.confirmed = self.confirmed.apply(op)
        self.document = self.document.apply(incoming)
        self.version = version
        self._committed(version, op, client)
        return incoming

    def _committed(self, version: int, op: Delta, author: str | None) -> None:
        """Record a server op (in server form) and move the remote cursors through it."""
        self._history.append((version, op, author))
        for client, cursor in self._remote.items():
            if cursor is not None:
                side: Side = "right" if client == author else "left"
                self._remote[client] = transform_selection(*cursor, op, side)

    def receive_ack(self, seq: int | None, version: int) -> dict[str, Any] | None:
        """The in-flight op was committed as ``version``; return the next op message, if any.

        An ack for a ``seq`` that was already acknowledged (a duplicate
        delivery) is ignored. ``version`` equal to the current version means
        the op turned into a no-op on the server. Raises ``VersionGap`` when
        the ack skips versions, ``ProtocolError`` for an ack of nothing sent.
        """
        pending = self.inflight
        if pending is None or seq != pending.seq:
            if seq is not None and seq < (pending.seq if pending else self.next_seq):
                return None
            raise ProtocolError(f"ack for seq {seq}, which is not in flight")
        if version == self.version + 1:
            self.confirmed = self.confirmed.apply(pending.op)
            self._committed(version, pending.op, self.client_id)
        elif version != self.version or pending.op.ops:
            raise VersionGap(
                f"ack of seq {seq} as version {version} but the client is at {self.version}",
                expected=self.version + 1,
                got=version,
            )
        self.version = version
        self.inflight = None
        return self._send_buffer()

    def _send_buffer(self) -> dict[str, Any] | None:
        """Nothing is in flight: the buffer (if any) becomes the in-flight op."""
        if self.buffer is None:
            return None
        self.inflight = Pending(self.buffer, self.next_seq, self.version, self.buffer)
        self.next_seq += 1
        self.buffer = None
        return self._op_message(self.inflight)

    def catchup(self, ops: Iterable[Mapping[str, Any]]) -> Delta:
        """Apply a ``catchup``'s ops; return the composed delta for the editor.

        Entries at or below the current version are skipped. An entry with
        this client's id and the in-flight ``seq`` is that op's ack; a buffer
        then becomes the new in-flight op, which is *not* returned: call
        ``resend()`` once the catch-up is applied.

        Entries up to that ack are applied one by one. If the rest would cost
        ``merge_at`` or more (``merge_cost``), they are not applied: the
        pending edits become an offline merge, and ``resend()`` returns the
        ``merge`` message. While merging, a catch-up that contains the merge's
        ``(client, seq)`` completes it (the reply was lost): the op from the
        branch's final state to the caught-up document is their difference,
        as the server would answer a repeated merge; otherwise the ops are
        ignored and ``resend()`` repeats the merge.
        """
        entries = [entry for entry in ops if entry["v"] > self.version]
        if self.merging is not None:
            return self._catchup_merging(entries)
        own = next(
            (
                index
                for index, entry in enumerate(entries)
                if self.inflight is not None
                and entry.get("client") == self.client_id
                and entry.get("seq") == self.inflight.seq
            ),
            -1,
        )
        change = self._apply_entries(entries[: own + 1])
        rest = entries[own + 1 :]
        if self.merge_at is not None and rest and self.merge_cost(len(rest)) >= self.merge_at:
            self._begin_merge()
            return change
        return compose(change, self._apply_entries(rest))

    def merge_cost(self, missed: int) -> int:
        """What transforming the pending edits past ``missed`` server ops costs, in components.

        ``missed`` × (components of the in-flight op + components of the
        buffer): the client transforms both past every missed op, and the
        server the in-flight op. The buffer is composed, so its size is the
        number of separate places edited, not the number of keystrokes.
        """
        pending = len(self.inflight.op.ops) if self.inflight is not None else 0
        pending += len(self.buffer.ops) if self.buffer is not None else 0
        return missed * pending

    def _begin_merge(self) -> None:
        """The in-flight op and the buffer become one offline merge, based on ``version``.

        It takes a new ``seq``: the in-flight op's is retired unacknowledged.
        """
        self.merging = PendingMerge(self.pending_op(), self.next_seq, self.version, self.document)
        self.next_seq += 1
        self.inflight = self.buffer = None
        self.merges += 1

    def _catchup_merging(self, entries: list[Mapping[str, Any]]) -> Delta:
        merge = self.merging
        assert merge is not None
        if not any(
            entry.get("client") == self.client_id and entry.get("seq") == merge.seq
            for entry in entries
        ):
            return Delta()
        head = self.confirmed
        for entry in entries:
            head = head.apply(Delta.from_json(entry["op"]))
        return self.resolve_merge(entries[-1]["v"], head)

    def _apply_entries(self, entries: Iterable[Mapping[str, Any]]) -> Delta:
        change = Delta()
        for entry in entries:
            version = entry["v"]
            if version <= self.version:
                continue
            pending = self.inflight
            if (
                pending is not None
                and entry.get("client") == self.client_id
                and entry.get("seq") == pending.seq
            ):
                self.receive_ack(pending.seq, version)
                continue
            op = Delta.from_json(entry["op"])
            change = compose(change, self.receive_op(version, op, entry.get("client")))
        return change

    # -- offline merge -----------------------------------------------------------

    def receive_merged(
        self, seq: int | None, version: int, op: Delta
    ) -> tuple[Delta, dict[str, Any] | None]:
        """The merge was committed: ``op`` takes its final state to ``version``.

        Returns the delta for the editor and the next ``op`` message (the
        edits typed during the merge), if any. A reply for a merge already
        completed (a repeat) is ignored; raises ``ProtocolError`` for a reply
        to nothing sent.
        """
        merge = self.merging
        if merge is None or seq != merge.seq:
            if seq is not None and seq < self.next_seq:
                return Delta(), None
            raise ProtocolError(f"merged for seq {seq}, which is not in flight")
        return self._merged(version, op)

    def resolve_merge(self, version: int, document: Document | Delta) -> Delta:
        """Complete the merge from the server's ``document`` at ``version`` (it is committed).

        For a lost reply: the op is the difference between the branch's final
        state and ``document``. The edits typed meanwhile become the in-flight
        op (see ``resend()``). Returns the delta for the editor.
        """
        merge = self.merging
        if merge is None:
            raise RuntimeError("no merge in flight")
        return self._merged(version, diff(merge.final, document))[0]

    def snapshot_while_merging(
        self, version: int, content: Document | Delta, last_seq: int | None
    ) -> Delta:
        """A ``snapshot`` answered the re-join of a merging client.

        If ``last_seq`` shows the merge committed, it is complete at the
        snapshot (``resolve_merge``); otherwise the merge stays in flight, to
        be resent (an empty delta is returned).
        """
        merge = self.merging
        if merge is None:
            raise RuntimeError("no merge in flight")
        if last_seq is None or last_seq < merge.seq:
            return Delta()
        document = content if isinstance(content, Document) else Document(content)
        return self.resolve_merge(version, document)

    def _merged(self, version: int, op: Delta) -> tuple[Delta, dict[str, Any] | None]:
        merge = self.merging
        assert merge is not None
        #          merged op M (branch final state → version)
        #   (buffer) ───────────▶
        #     B │              │ B' = transform(B, M, "right")
        #       ▼              ▼
        #          M' = transform(M, B, "left")  — apply M' to the editor
        confirmed = merge.final.apply(op)
        incoming = op
        if self.buffer is not None:
            buffer = self.buffer
            self.buffer = transform(buffer, op, "right")
            incoming = transform(op, buffer, "left")
        self.confirmed = confirmed
        self.document = self.document.apply(incoming)
        self.version = version
        self.merging = None
        # The jump from the base to ``version`` is no sequence of server ops.
        self._history.clear()
        return incoming, self._send_buffer()

    def load_snapshot(self, version: int, content: Delta | Document) -> Delta:
        """Replace everything with the server's document at ``version``.

        Pending edits cannot be rebased onto a snapshot (there is no common
        version), so they are dropped; use ``discard_pending`` first to learn
        what they were. Returns the delta taking the local document to the
        snapshot, for the editor.
        """
        document = content if isinstance(content, Document) else Document(content)
        change = diff(self.document, document)
        self.confirmed = self.document = document
        self.version = version
        self.inflight = self.buffer = self.merging = None
        self._history.clear()
        self._remote.clear()
        return change

    def discard_pending(self) -> Delta:
        """Drop the in-flight op (or merge) and the buffer (after an error for them).

        Returns the delta that undoes them in the editor; the document is
        ``confirmed`` again, so a re-join with ``v`` can catch up.
        """
        change = invert(self.pending_op(), self.confirmed)
        self.document = self.confirmed
        self.inflight = self.buffer = self.merging = None
        return change

    def pending_op(self) -> Delta:
        """The in-flight op (or merge) and the buffer, composed (empty when synchronized)."""
        pending = self.merging.op if self.merging is not None else Delta()
        pending = self.inflight.op if self.inflight is not None else pending
        return pending if self.buffer is None else compose(pending, self.buffer)

    # -- cursors -----------------------------------------------------------------

    def set_remote_cursor(
        self, client: str, cursor: tuple[int, int] | None, version: int | None = None
    ) -> None:
        """Remember ``client``'s cursor, sent at server ``version`` (default: ours).

        It is kept in server coordinates and moved through every later server
        op, so it stays right however long the client stays still.
        """
        if cursor is not None and version is not None and version < self.version:
            index, length = cursor
            for op_version, op, author in self._history:
                if op_version > version:
                    side: Side = "right" if author == client else "left"
                    index, length = transform_selection(index, length, op, side)
            cursor = (index, length)
        self._remote[client] = cursor

    def forget_remote_cursor(self, client: str) -> None:
        """Drop ``client``'s cursor (it left)."""
        self._remote.pop(client, None)

    def remote_cursor(self, client: str) -> tuple[int, int] | None:
        """``client``'s cursor in the local document (through our pending ops), or None."""
        cursor = self._remote.get(client)
        return None if cursor is None else self.transform_remote_cursor(*cursor)

    def transform_remote_cursor(
        self,
        index: int,
        length: int = 0,
        *,
        version: int | None = None,
        client: str | None = None,
    ) -> tuple[int, int]:
        """Where a remote cursor (at server ``version``, default: ours) falls in our document.

        It is moved through the server ops after ``version`` that we know
        (``client``'s own inserts push its caret along), then through our
        in-flight op and buffer: our pending insert at the caret leaves it
        before the insert, as the server will when it commits ours. The result
        is clamped to the local document.
        """
        if version is not None and version < self.version:
            for op_version, op, author in self._history:
                if op_version > version:
                    side: Side = "right" if client is not None and author == client else "left"
                    index, length = transform_selection(index, length, op, side)
        for pending in (
            self.merging.op if self.merging else None,
            self.inflight.op if self.inflight else None,
            self.buffer,
        ):
            if pending is not None:
                index, length = transform_selection(index, length, pending, "left")
        size = len(self.document)
        index = min(max(index, 0), size)
        return index, max(0, min(length, size - index))

    def local_cursor_at_version(self, index: int, length: int = 0) -> tuple[int, int]:
        """A local cursor moved back to ``version`` (undoing our pending edits), to send."""
        pending = self.pending_op()
        if pending.ops:
            back = invert(pending, self.confirmed)
            index, length = transform_selection(index, length, back, "left")
        size = len(self.confirmed)
        index = min(max(index, 0), size)
        return index, max(0, min(length, size - index))

    def presence_message(
        self, cursor: tuple[int, int] | None, state: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The ``presence`` message for a local cursor ``(index, length)`` or None."""
        message: dict[str, Any] = {"type": "presence", "doc": self.doc, "v": self.version}
        if cursor is None:
            message["cursor"] = None
        else:
            index, length = self.local_cursor_at_version(*cursor)
            message["cursor"] = {"index": index, "length": length}
        if state is not None:
            message["state"] = dict(state)
        return message

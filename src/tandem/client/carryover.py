"""Carrying a client's unacknowledged edits over to a snapshot of another history.

A re-join is answered with a ``snapshot`` instead of a ``catchup`` when the
server no longer holds the history the client's version belongs to: ops the
client saw were lost to a power loss before they were durable, or the document
was restored from a backup (docs/protocol.md, "Re-joining from another
history"). There is no common version to rebase on, so the pending edits are
carried over as an offline merge against the new text, three-way:

* the base is the client's confirmed document, plus its in-flight op (or
  merge) when the snapshot's ``last_seq`` shows that op committed;
* "theirs" is the snapshot, reached from the base by ``diff(base, snapshot)``;
* "ours" is the rest of the pending edits, transformed past that difference
  (the server's text first at a tie, as in every transform on the client).

The result is one ordinary op based on the snapshot's version, with a new
``seq``. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from tandem.client.state import ClientState
from tandem.ot.compose import compose
from tandem.ot.delta import Delta
from tandem.ot.diff import diff
from tandem.ot.document import Document
from tandem.ot.transform import transform

__all__ = ["carry_over"]


def carry_over(
    state: ClientState, version: int, content: Document | Delta, last_seq: int | None
) -> tuple[Delta, dict[str, Any] | None]:
    """Load the snapshot into ``state`` keeping its pending edits.

    Returns the change for the editor (local document → snapshot with the
    edits) and the ``op`` message carrying the edits, or None when nothing
    is pending.
    """
    snapshot = content if isinstance(content, Document) else Document(content)
    base = state.confirmed
    first = state.merging.op if state.merging is not None else None
    first_seq = state.merging.seq if state.merging is not None else None
    if state.inflight is not None:
        first, first_seq = state.inflight.op, state.inflight.seq
    ours = state.buffer if state.buffer is not None else Delta()
    if first is not None and first_seq is not None:
        if last_seq is not None and last_seq >= first_seq:
            base = base.apply(first)  # committed: it is in the snapshot already
        else:
            ours = first if state.buffer is None else compose(first, state.buffer)
    theirs = diff(base, snapshot)
    local = state.document
    carried = transform(ours, theirs, "right")
    state.load_snapshot(version, snapshot)
    if last_seq is not None:
        state.next_seq = max(state.next_seq, last_seq + 1)
    message = state.local_edit(carried) if carried.ops else None
    return diff(local, state.document), message

"""Merge a long offline branch without step-by-step OT (issue #5).

A client that was offline for a while comes back with ``m`` ops (its branch,
each based on the previous one) against a base version ``b`` while the server
committed ``n`` ops after ``b``. Server-side OT must transform the branch step
by step (transform does not commute with compose for our type): O(n·m)
transforms. Here both branches are merged from their common version instead,
and the result comes out as two ops: ``commit`` (server head → merged) and
``catchup`` (the client's final state → merged), so the client never
reproduces the server's path. Two engines, chosen by measurement
(``bench.offline_merge``, docs/performance.md):

``"compose"`` (default) — the Eg-walker observation for two branches from one
  critical version: each branch's effect over the base is one delta (its ops
  composed, as a balanced tree so the cost is O(m log m), copying untouched
  stretches as list slices), and the two are merged by ONE transform pair.
  That single diamond is exact by TP1; inserts at the same base position keep
  the server's first, and each side's text stays contiguous (no interleaving).
``"yrs"`` — replay both branches into forks of a pycrdt Y.Doc seeded with the
  base and exchange updates; the text events are the two ops. Exact too, but
  Yrs finds an index by walking its blocks, O(blocks) per op: about 4× slower
  on 5,000 scattered edits in 50,000 characters.

Pure: must not import asyncio, storage, bus or network code.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Final, Literal

from pycrdt import Doc, Text, TextEvent

from tandem.merge.plaintext import PlainText
from tandem.merge.replica import TEXT_NAME, ReplicaError
from tandem.merge.translate import apply_delta, apply_to_text, delta_from_event
from tandem.ot.attributes import compose_attributes
from tandem.ot.compose import compose, compose_pairwise
from tandem.ot.delta import Delete, Delta, Insert, Retain
from tandem.ot.document import Document
from tandem.ot.iterator import ComponentIterator
from tandem.ot.transform import transform

__all__ = [
    "BASE_CLIENT_ID",
    "CLIENT_CLIENT_ID",
    "SERVER_CLIENT_ID",
    "BranchMerge",
    "Engine",
    "compose_branch",
    "merge_branches",
    "ot_cost",
]

#: Yjs client ids of the three temporary docs (fixed: the merge is deterministic).
BASE_CLIENT_ID: Final = 1
SERVER_CLIENT_ID: Final = 2
CLIENT_CLIENT_ID: Final = 3

#: ``"compose"``: each branch composed to one delta over the base, then one
#: transform (the default, measured fastest); ``"yrs"``: replayed into pycrdt.
Engine = Literal["compose", "yrs"]


@dataclass(frozen=True, slots=True)
class BranchMerge:
    """The result of merging a client branch with the server's ops since the base."""

    #: The op to commit at the server head ``h``: server head → merged.
    commit: Delta
    #: The op taking the client's final state (base + its branch) to the merged state.
    catchup: Delta
    #: The merged document (server head after ``commit``).
    merged: Document
    #: The client's final state (base + every op of its branch).
    client_document: Document


def ot_cost(missed: int, branch: int) -> int:
    """What the plain OT path costs, in transforms: ``n·m``."""
    return missed * branch


class _Side:
    """One fork of the base: a Y.Doc with its text, recording the text events."""

    def __init__(self, client_id: int, base_update: bytes, plain: str) -> None:
        self.doc: Doc[Any] = Doc(client_id=client_id)
        self.text: Text = self.doc.get(TEXT_NAME, type=Text)
        if base_update:
            self.doc.apply_update(base_update)
        self.plain = plain
        self.events: list[list[dict[str, Any]]] = []
        self.listening = False
        self.text.observe(self._on_text)

    def _on_text(self, event: TextEvent) -> None:
        if self.listening:
            self.events.append(list(getattr(event, "delta")))  # noqa: B009 - untyped in pycrdt

    def replay(self, ops: Sequence[Delta]) -> None:
        """Apply ``ops`` (code points, each based on the previous) in one transaction."""
        if not ops:
            return
        plain = PlainText(self.plain)
        with self.doc.transaction(origin="branch"):
            for op in ops:
                plain = apply_delta(self.text, None, plain, op)
        self.plain = str(plain)

    def receive(self, update: bytes) -> Delta:
        """Apply the other side's update; returns the resulting change in code points."""
        self.events = []
        self.listening = True
        try:
            with self.doc.transaction(origin="merge"):
                self.doc.apply_update(update)
        finally:
            self.listening = False
        change = Delta()
        plain = self.plain
        for changes in self.events:
            step = delta_from_event(plain, changes)
            plain = apply_to_text(plain, step)
            change = compose(change, step) if change.ops else step
        self.plain = plain
        return change


def merge_branches(
    base: Document,
    server_ops: Sequence[Delta],
    client_ops: Sequence[Delta],
    server_head: Document | None = None,
    *,
    engine: Engine = "compose",
) -> BranchMerge:
    """Merge ``client_ops`` (based on ``base``) with ``server_ops`` (base → head).

    ``server_head`` is the document after ``server_ops`` if the caller has it
    (the server does); otherwise it is computed. Raises ``ValueError`` for an
    op that does not fit its document and ``ReplicaError`` if Yrs fails.
    """
    if engine == "compose":
        return _merge_composed(base, server_ops, client_ops, server_head)
    try:
        return _merge(base, server_ops, client_ops, server_head)
    except (KeyboardInterrupt, SystemExit, GeneratorExit, ValueError, ReplicaError):
        raise
    except BaseException as exc:  # noqa: BLE001 - pyo3 PanicException is a BaseException
        raise ReplicaError(f"yrs failed: {type(exc).__name__}: {exc}") from None


def _merge_composed(
    base: Document,
    server_ops: Sequence[Delta],
    client_ops: Sequence[Delta],
    server_head: Document | None,
) -> BranchMerge:
    server = compose_branch(server_ops)
    client = compose_branch(client_ops)
    client_document = base.apply(client)
    if server_head is None:
        server_head = base.apply(server)
    commit = transform(client, server, "right").chop()
    catchup = transform(server, client, "left").chop()
    return BranchMerge(commit, catchup, server_head.apply(commit), client_document)


def _merge(
    base: Document,
    server_ops: Sequence[Delta],
    client_ops: Sequence[Delta],
    server_head: Document | None,
) -> BranchMerge:
    client_document = base
    for op in client_ops:
        client_document = client_document.apply(op)
    if server_head is None:
        server_head = base
        for op in server_ops:
            server_head = server_head.apply(op)
    seed: Doc[Any] = Doc(client_id=BASE_CLIENT_ID)
    seed_text = seed.get(TEXT_NAME, type=Text)
    base_plain = ""
    with seed.transaction(origin="base"):
        base_plain = str(apply_delta(seed_text, None, PlainText(), base.to_delta()))
    base_update = seed.get_update()
    server = _Side(SERVER_CLIENT_ID, base_update, base_plain)
    client = _Side(CLIENT_CLIENT_ID, base_update, base_plain)
    server.replay(server_ops)
    client.replay(client_ops)
    from_client = client.doc.get_update(server.doc.get_state())
    from_server = server.doc.get_update(client.doc.get_state())
    commit = server.receive(from_client).chop()
    catchup = client.receive(from_server).chop()
    merged = server_head.apply(commit)
    return BranchMerge(commit, catchup, merged, client_document)


def compose_branch(ops: Sequence[Delta]) -> Delta:
    """One delta with the effect of ``ops`` applied in order (pairwise, as a balanced tree).

    Composing left to right costs O(m²) components (the running result grows);
    a balanced tree costs O(m log m), and ``_compose_sparse`` copies the
    untouched stretches between small edits as list slices.
    """
    return compose_pairwise([op for op in ops if op.ops], _compose_sparse)


def _compose_sparse(a: Delta, b: Delta) -> Delta:
    """``compose(a, b)`` in effect, fast when ``b`` is mostly plain retains.

    Where ``b`` plainly retains a stretch of ``a``'s output, ``a``'s whole
    components are copied as one list slice (``a`` is canonical, so its
    neighbours never merge); everything else steps component by component with
    quill-delta's compose rules. Property-tested against ``compose``.
    """
    ops = a.ops
    size = len(ops)
    # starts[k]: output length of a's components before component k (deletes count 0).
    starts = list(
        accumulate(
            [0 if type(component) is Delete else len(component) for component in ops], initial=0
        )
    )
    it = ComponentIterator(ops)
    result = Delta()
    push = result.push
    out = result.ops
    for other in b.ops:
        kind = type(other)
        if kind is Insert:
            push(other)
            continue
        n = other.count  # type: ignore[union-attr]
        plain = kind is Retain and not other.attributes  # type: ignore[union-attr]
        while n > 0:
            if it.index >= size:
                # Past a's end: a retains the rest implicitly.
                push(Retain(n, other.attributes) if kind is Retain else Delete(n))  # type: ignore[union-attr]
                n = 0
                break
            if it.peek_type() is Delete:
                push(it.next())
                continue
            if plain and it.offset == 0:
                index = it.index
                stop = bisect_right(starts, starts[index] + n, index, size + 1) - 1
                # starts is non-decreasing; stop is the last k with starts[k] <= target,
                # so components index..stop-1 fit entirely.
                if stop > index:
                    push(ops[index])
                    out.extend(ops[index + 1 : stop])
                    n -= starts[stop] - starts[index]
                    it.index = stop
                    continue
            this = it.next(n)
            length = len(this)
            n -= length
            this_kind = type(this)
            if plain:
                push(this)
            elif kind is Retain:
                attributes = compose_attributes(
                    this.attributes,  # type: ignore[union-attr]
                    other.attributes,  # type: ignore[union-attr]
                    this_kind is Retain,
                )
                if this_kind is Retain:
                    push(Retain(length, attributes))
                else:
                    push(Insert(this.text, attributes))  # type: ignore[union-attr]
            elif this_kind is Retain:
                push(Delete(length))
            # else: b deletes what a inserted; both vanish.
    # b is done: the rest of a passes through.
    while it.index < size and it.offset:
        push(it.next())
    if it.index < size:
        push(ops[it.index])
        out.extend(ops[it.index + 1 :])
    return result.chop()

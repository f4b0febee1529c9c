"""The lazy replica's pure parts: ``Replica.format_free``, ``holds_formats``, ``Backlog``."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text
from tests.integration.ystructs import canonical

from tandem.merge.backlog import Backlog
from tandem.merge.replica import Replica, ReplicaError, carries_formats, replay_record
from tandem.merge.updates import holds_formats
from tandem.ot.delta import Attributes, Delta
from tandem.records import OpRecord


def _plain_ops(draw: st.DrawFn, count: int) -> list[Delta]:
    length, ops = 0, []
    for _ in range(count):
        if length and draw(st.booleans()):
            at = draw(st.integers(0, length - 1))
            size = draw(st.integers(1, min(3, length - at)))
            ops.append(Delta().retain(at).delete(size).chop())
            length -= size
        else:
            at = draw(st.integers(0, length))
            text = draw(st.text(alphabet="ab é😀\n", min_size=1, max_size=4))
            ops.append(Delta().retain(at).insert(text).chop())
            length += len(text)
    return ops


plain_ops = st.composite(_plain_ops)


@settings(max_examples=100, deadline=None)
@given(plain_ops(12))
def test_ops_without_attributes_on_a_format_free_replica_replay_byte_identically(
    ops: list[Delta],
) -> None:
    """Why such an op may be stored without its update: its delta makes the same items."""
    first, second = Replica(client_id=7), Replica(client_id=7)
    for version, op in enumerate(ops, 1):
        update = first.apply(op, version)
        assert second.apply(op, version) == update
        assert first.format_free and second.format_free
    assert first.state() == second.state()


def test_an_insert_negating_two_attributes_is_why_formatting_ends_format_freedom() -> None:
    """Yrs orders its negation markers by hash-map iteration: the delta is not enough."""
    replica = Replica()
    replica.apply(Delta().insert("ab", {"bold": True}), 1)
    assert not replica.format_free
    states = set()
    for _ in range(20):
        other = Replica()
        other.apply(Delta().insert("abcd", {"bold": True}), 1)
        other.apply(Delta().retain(4, {"italic": True}), 2)
        other.apply(Delta().retain(2).insert("X"), 3)
        states.add(other.state())
    assert len(states) > 1  # the hazard the rule avoids (if Yrs ever fixes it, drop this)


def test_format_freedom_is_read_from_states_updates_and_merges() -> None:
    formatted = Replica()
    formatted.apply(Delta().insert("ab", {"bold": True}), 1)
    formatted.apply(Delta().retain(1).delete(1), 2)
    plain = Replica()
    plain.apply(Delta().insert("ab"), 1)
    assert holds_formats(formatted.state()) and not holds_formats(plain.state())
    assert not Replica(formatted.state(), 2).format_free
    assert Replica(plain.state(), 1).format_free

    client: Doc[Any] = Doc(client_id=99)
    text = client.get("content", type=Text)
    with client.transaction():
        text.insert(0, "xy")
    merged = Replica()
    merged.merge(client.get_update())
    assert merged.format_free
    before = client.get_state()
    with client.transaction():
        text.format(0, 1, {"italic": True})
    merged.merge(client.get_update(before))
    assert not merged.format_free

    replayed = Replica()
    update = Replica().apply(Delta().insert("q", {"bold": True}), 1)
    replayed.replay(update, 1, Delta().insert("q", {"bold": True}))
    assert not replayed.format_free


def _record(version: int, op: Delta, crdt: bytes | None = None) -> OpRecord:
    return OpRecord("d", version, op, "c", None, "u", 0.0, crdt)


def test_a_backlog_applies_its_ops_as_they_would_have_been_applied() -> None:
    eager, lazy = Replica(), Replica()
    backlog = Backlog(limit=3)
    ops = [Delta().insert("abc"), Delta().retain(1).delete(1), Delta().retain(2).insert("z")]
    for version, op in enumerate(ops, 1):
        record = _record(version, op)
        replay_record(eager, record)
        backlog.push(record)
    assert backlog.full and backlog.format_free and lazy.version == 0
    backlog.apply_to(lazy)
    assert not backlog and lazy.version == 3
    assert lazy.state() == eager.state()
    backlog.push(_record(4, Delta().retain(1, {"bold": True})))
    assert not backlog.format_free


def test_a_backlog_with_a_gap_is_refused() -> None:
    backlog = Backlog()
    backlog.push(_record(2, Delta().insert("a")))
    with pytest.raises(ReplicaError):
        backlog.apply_to(Replica())
    assert not backlog


@st.composite
def _histories(draw: st.DrawFn) -> list[OpRecord]:
    """Committed records as a real log holds them: OT ops with their update (any
    formatting) or without it (no attributes, on a format-free replica), and Yjs
    updates from another client (inserts, formats, deletes) with their delta."""
    author = Replica(client_id=5)
    foreign: Doc[Any] = Doc(client_id=77)
    ftext = foreign.get("content", type=Text)
    records: list[OpRecord] = []
    for version in range(1, draw(st.integers(1, 25)) + 1):
        length = len(author.plain)
        kind = draw(st.sampled_from(["insert", "insert", "delete", "format", "yjs"]))
        if kind == "yjs":
            foreign.apply_update(author.diff(foreign.get_state()))
            before = foreign.get_state()
            size = len(str(ftext).encode())
            step = draw(st.sampled_from(["insert", "format", "delete"]))
            if step == "insert" or size == 0:
                ftext.insert(size if draw(st.booleans()) else 0, "yé", {"italic": True})
            elif step == "format":
                ftext.format(0, size, {"bold": True, "underline": True})
            else:
                del ftext[0 : len(str(ftext)[0].encode())]
            delta, effective = author.merge(foreign.get_update(before))
            author.advance(version)
            records.append(_record(version, delta, effective))
            continue
        if kind == "delete" and length:
            at = draw(st.integers(0, length - 1))
            op = Delta().retain(at).delete(1).chop()
        elif kind == "format" and length:
            at = draw(st.integers(0, length - 1))
            styles: list[Attributes] = [{"bold": True}, {"bold": None, "italic": True}]
            op = Delta().retain(at).retain(1, draw(st.sampled_from(styles))).chop()
        else:
            at = draw(st.integers(0, length))
            inserts: list[Attributes | None] = [None, None, {"bold": True}, {"bold": True, "x": 1}]
            style = draw(st.sampled_from(inserts))
            op = Delta().retain(at).insert("ab😀", style).chop()
        deferrable = author.format_free and not carries_formats(op)
        update = author.apply(op, version)
        stored = None if deferrable and draw(st.booleans()) else update
        records.append(_record(version, op, stored))
    return records


@settings(max_examples=200, deadline=None)
@given(_histories(), st.data())
def test_one_transaction_for_a_backlog_makes_the_items_of_one_per_op(
    records: list[OpRecord], data: st.DataObject
) -> None:
    eager = Replica(client_id=5)
    for record in records:
        replay_record(eager, record)
    batched = Replica(client_id=5)
    points = st.integers(1, len(records) - 1) if len(records) > 1 else st.nothing()
    cuts = sorted(data.draw(st.sets(points)))
    start = 0
    for cut in [*cuts, len(records)]:
        batched.replay_all(records[start:cut])
        start = cut
    assert batched.version == eager.version == len(records)
    assert canonical(batched.state()) == canonical(eager.state())
    assert batched.plain == eager.plain and batched.content() == eager.content()
    assert batched.format_free == eager.format_free

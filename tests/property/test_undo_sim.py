"""Seeded simulation of per-user undo: several users edit, undo and redo at random.

Each user is a ``tandem.client.state.ClientState`` with a
``tandem.client.undo.UndoManager``, talking to a one-history server over FIFO
channels delivered in random order. Every inserted character is unique (CJK
code points from a counter), so a character's identity shows in the text.
Properties, checked at every undo and redo on the user's own replica:

* it never removes a character the user did not insert (typed, or brought
  back by their own undo), i.e. never another user's text;
* it never brings back a character the user did not delete, i.e. never text
  only someone else deleted;

and every run ends with all replicas equal to the server. A naive undo (the
inverse applied without transforming it) is caught by the same properties.

Replay one seed with ``TANDEM_SIM_SEED=<seed> pytest tests/property/test_undo_sim.py``.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tandem.client.state import ClientState
from tandem.client.undo import Step, UndoManager
from tandem.errors import OperationTooLong
from tandem.ot import Delta, Document, apply, transform

from .seeds import with_fresh_seeds

UNIQUE = 0x4E00


def unique_counts(document: Document) -> Counter[str]:
    return Counter(ch for ch in document.text() if UNIQUE <= ord(ch) < UNIQUE + 0x5000)


def changed(before: Document, after: Document) -> tuple[set[str], set[str]]:
    """Characters whose count fell (removed) and rose (appeared)."""
    a, b = unique_counts(before), unique_counts(after)
    return {ch for ch, n in a.items() if b[ch] < n}, {ch for ch, n in b.items() if a[ch] < n}


class NaiveUndo(UndoManager):
    """Applies the inverse as is: what the properties must catch."""

    def transform(self, remote: Delta) -> None:
        pass


@dataclass
class User:
    name: str
    state: ClientState
    undo: UndoManager
    mine: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    up: list[dict[str, Any]] = field(default_factory=list)
    down: list[dict[str, Any]] = field(default_factory=list)
    caret: int = 0


@dataclass
class Outcome:
    violations: list[str]
    committed: int
    steps: int


def simulate(seed: int, make_undo: Callable[[], UndoManager] = UndoManager) -> Outcome:
    rng = random.Random(seed)
    fresh = iter(range(UNIQUE, UNIQUE + 0x5000))
    history: list[Delta] = []
    server = Document("ab")
    users = [
        User(f"u{i}", ClientState("d", f"u{i}", content=server), make_undo())
        for i in range(rng.randint(2, 4))
    ]
    violations: list[str] = []
    now = 0.0
    steps = 0

    def submit(user: User, message: dict[str, Any]) -> None:
        nonlocal server
        op = Delta.from_json(message["op"])
        for committed in history[message["v"] :]:
            op = transform(op, committed, "right")
        server = apply(server, op)
        history.append(op)
        version = len(history)
        for other in users:
            if other is user:
                other.down.append({"type": "ack", "v": version, "seq": message["seq"]})
            else:
                other.down.append({"type": "op", "v": version, "op": op})

    def receive(user: User, message: dict[str, Any]) -> None:
        if message["type"] == "ack":
            out = user.state.receive_ack(message["seq"], message["v"])
            if out is not None:
                user.up.append(out)
            return
        applied = user.state.receive_op(message["v"], message["op"])
        user.undo.transform(applied)
        user.caret = min(user.caret, len(user.state.document))

    def local(user: User, change: Delta) -> None:
        before = user.state.document
        out = user.state.local_edit(change)
        removed, appeared = changed(before, user.state.document)
        user.deleted |= removed
        user.mine |= appeared
        if out is not None:
            user.up.append(out)

    def edit(user: User) -> None:
        document = user.state.document
        length = len(document)
        roll = rng.random()
        if roll < 0.6 or length == 0:
            at = min(user.caret, length) if rng.random() < 0.6 else rng.randint(0, length)
            count = 1 if rng.random() < 0.8 else rng.randint(1, 4)
            text = "".join(" " if rng.random() < 0.15 else chr(next(fresh)) for _ in range(count))
            change = Delta().retain(at).insert(text, {"bold": True} if rng.random() < 0.1 else None)
            user.caret = at + len(text)
        else:
            at = rng.randrange(length)
            n = min(length - at, rng.randint(1, 3))
            if roll < 0.9:
                change = Delta().retain(at).delete(n)
            else:
                change = (
                    Delta().retain(at).retain(n, {"italic": True if rng.random() < 0.5 else None})
                )
            user.caret = at
        change.chop()
        user.undo.record(change, document, now=now)
        local(user, change)

    def undo_step(user: User, redo: bool) -> None:
        nonlocal steps
        document = user.state.document
        what = f"seed {seed}: {user.name} {'redo' if redo else 'undo'}"
        try:
            result: Step | None = user.undo.redo(document) if redo else user.undo.undo(document)
        except OperationTooLong:
            violations.append(f"{what} does not fit the document")
            return
        if result is None:
            return
        if result.delta.base_length() > len(document):
            violations.append(f"{what} does not fit the document")
            return
        removed, appeared = changed(document, apply(document, result.delta))
        violations.extend(
            f"{what} removed {ch!r}, which another user inserted" for ch in removed - user.mine
        )
        violations.extend(
            f"{what} brought back {ch!r}, which another user deleted"
            for ch in appeared - user.deleted
        )
        local(user, result.delta)
        steps += 1

    def act(user: User) -> None:
        roll = rng.random()
        if roll < 0.3:
            edit(user)
        elif roll < 0.4:
            undo_step(user, False)
        elif roll < 0.45:
            undo_step(user, True)
        elif roll < 0.7:
            if user.up:
                submit(user, user.up.pop(0))
        elif user.down:
            receive(user, user.down.pop(0))

    for _ in range(150):
        now += rng.choice((0.01, 0.05, 0.2, 0.7))
        act(rng.choice(users))
    for _ in range(120):  # then everyone undoes, now and then redoes, while ops arrive
        user = rng.choice(users)
        if rng.random() < 0.5:
            undo_step(user, rng.random() < 0.2)
        else:
            act(user)
    while any(u.up or u.down for u in users):
        for user in users:
            if user.up:
                submit(user, user.up.pop(0))
            if user.down:
                receive(user, user.down.pop(0))
    for user in users:
        assert user.state.synchronized, f"seed {seed}: {user.name} still pending"
        assert user.state.document == server, f"seed {seed}: {user.name} diverged"
    return Outcome(violations, len(history), steps)


def _seeds() -> list[int] | range:
    if "TANDEM_SIM_SEED" in os.environ:
        seed = int(os.environ["TANDEM_SIM_SEED"])
        return range(seed, seed + 1)
    return with_fresh_seeds(range(1, 1001), 50, name="undo", replay="TANDEM_SIM_SEED")


def test_undo_converges_and_touches_only_its_users_text() -> None:
    seeds = _seeds()
    committed = steps = 0
    for seed in seeds:
        outcome = simulate(seed)
        assert outcome.violations == [], f"replay with TANDEM_SIM_SEED={seed}"
        committed += outcome.committed
        steps += outcome.steps
    assert committed > len(seeds) * 10, committed
    assert steps > len(seeds) * 20, steps


def test_the_properties_catch_a_naive_undo() -> None:
    naive = NaiveUndo()
    doc = Document()
    for i, ch in enumerate("hello"):
        change = Delta().retain(i).insert(ch)
        naive.record(change, doc, now=i * 0.1)
        doc = apply(doc, change)
    theirs = Delta().insert("XY")
    naive.transform(theirs)
    doc = apply(doc, theirs)
    result = naive.undo(doc)
    assert result is not None
    assert apply(doc, result.delta).text() == "lo"  # it deleted "XY"
    caught = sum(1 for seed in range(1, 101) if simulate(seed, NaiveUndo).violations)
    assert caught >= 50, f"caught in {caught} of 100 seeds"


@pytest.mark.parametrize("seed", [7, 8])
def test_a_replayed_seed_is_deterministic(seed: int) -> None:
    first, second = simulate(seed), simulate(seed)
    assert (first.committed, first.steps) == (second.committed, second.steps)

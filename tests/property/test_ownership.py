"""Properties of ``session/ownership.py``: a node never sequences outside its lease.

A hypothesis state machine plays one node's ``Ownership`` against a model of
the store's lease row (owner, epoch, expiry on the database's clock) and a
second node that takes the lease whenever it has expired. Requests take a
random time to reach the database and to come back; the node may be paused
(time jumps) at any point. The invariants, checked after every step:

* whenever the node may sequence, the row is its own — same owner, same epoch —
  and the real time is before the row's expiry less the margin (so it never
  sequences past its local deadline, and never while another node owns it);
* the epochs it is granted strictly increase;
* a commit the store fences stops it sequencing at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tandem.session.ownership import LeaseTiming, Ownership, Phase

TIMING = LeaseTiming(ttl=10.0, renew_every=3.0, margin=1.0)
ME = "node-a"

delays = st.floats(min_value=0.0, max_value=4.0, allow_nan=False)
pauses = st.floats(min_value=0.0, max_value=25.0, allow_nan=False)


@dataclass
class Row:
    """The store's lease row for the document."""

    owner: str = ""
    epoch: int = 0
    expires: float = float("-inf")


class LeaseMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.row = Row()
        self.node = Ownership(TIMING)
        self.granted: list[int] = []

    # -- the world -------------------------------------------------------------------

    @rule(pause=pauses)
    def time_passes(self, pause: float) -> None:
        """Time passes; the node may have been paused (SIGSTOP) all along."""
        self.now += pause

    @rule()
    def another_node_acquires(self) -> None:
        if self.row.expires <= self.now:
            self.row = Row("node-b", self.row.epoch + 1, self.now + TIMING.ttl)

    # -- the node ----------------------------------------------------------------------

    @rule(there=delays, back=delays)
    def acquire(self, there: float, back: float) -> None:
        if self.node.may_sequence(self.now):
            return
        sent = self.node.start_acquire(self.now)
        self.now += there
        if self.row.expires <= self.now or self.row.owner == ME:
            self.row = Row(ME, self.row.epoch + 1, self.now + TIMING.ttl)
            remaining = self.row.expires - self.now
            self.now += back
            self.node.acquired(self.row.epoch, remaining, sent)
            self.granted.append(self.row.epoch)
        else:
            self.now += back
            self.node.held_elsewhere()
            assert not self.node.may_sequence(self.now)

    @rule(there=delays, back=delays)
    def renew(self, there: float, back: float) -> None:
        if not self.node.renew_due(self.now):
            return
        epoch = self.node.epoch
        assert epoch is not None
        sent = self.node.start_renew(self.now)
        self.now += there
        row = self.row
        if row.owner == ME and row.epoch == epoch and row.expires > self.now:
            row.expires = self.now + TIMING.ttl
            remaining = TIMING.ttl
            self.now += back
            self.node.renewed(epoch, remaining, sent)
        else:
            self.now += back
            self.node.lost(epoch)
            assert not self.node.may_sequence(self.now)

    @rule(there=delays)
    def renew_errors(self, there: float) -> None:
        if self.node.renew_due(self.now):
            self.node.start_renew(self.now)
            self.now += there
            self.node.renew_failed()

    @rule(there=delays)
    def sequence_and_commit(self, there: float) -> None:
        """Sequence an op if allowed; its commit reaches the store ``there`` seconds later."""
        if not self.node.may_sequence(self.now):
            return
        epoch = self.node.epoch
        assert epoch is not None
        self.now += there
        if self.row.epoch != epoch:
            self.node.fenced(epoch)
            assert self.node.phase is Phase.FENCED
            assert not self.node.may_sequence(self.now)

    @rule()
    def release(self) -> None:
        epoch = self.node.epoch
        if epoch is not None and self.row.epoch == epoch:
            self.row.expires = float("-inf")
        self.node.released()
        assert not self.node.may_sequence(self.now)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def sequences_only_inside_its_own_lease(self) -> None:
        if self.node.may_sequence(self.now):
            assert self.row.owner == ME
            assert self.row.epoch == self.node.epoch
            assert self.now < self.row.expires - TIMING.margin + 1e-9
            assert self.node.deadline <= self.row.expires - TIMING.margin + 1e-9

    @invariant()
    def epochs_strictly_increase(self) -> None:
        assert all(a < b for a, b in zip(self.granted, self.granted[1:], strict=False))
        assert self.node.highest_epoch == (self.granted[-1] if self.granted else 0)


LeaseMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestLease = LeaseMachine.TestCase


def test_timing_leaves_room_for_two_renewals() -> None:
    LeaseTiming(ttl=10, renew_every=4.5, margin=1)
    with pytest.raises(ValueError, match="twice"):
        LeaseTiming(ttl=10, renew_every=5, margin=1)
    with pytest.raises(ValueError, match="positive"):
        LeaseTiming(ttl=0, renew_every=1, margin=0)


def test_a_lower_epoch_is_refused() -> None:
    node = Ownership(TIMING)
    sent = node.start_acquire(0.0)
    node.acquired(5, 10.0, sent)
    node.lost(5)
    sent = node.start_acquire(1.0)
    with pytest.raises(ValueError, match="only grow"):
        node.acquired(5, 10.0, sent)


def test_a_paused_owner_wakes_past_its_deadline() -> None:
    node = Ownership(TIMING)
    sent = node.start_acquire(100.0)
    node.acquired(1, 9.5, sent)
    assert node.may_sequence(108.4)
    assert not node.may_sequence(108.5)  # 100 + 9.5 - 1 margin
    assert node.next_wakeup(100.0) == 103.0
    assert node.next_wakeup(200.0) is None


def test_a_fenced_commit_stops_sequencing_at_once() -> None:
    node = Ownership(TIMING)
    node.acquired(3, 10.0, node.start_acquire(0.0))
    assert node.may_sequence(0.5)
    node.fenced(2)  # an older epoch's late failure changes nothing
    assert node.may_sequence(0.5)
    node.fenced(3)
    assert node.phase is Phase.FENCED
    assert not node.may_sequence(0.5)
    assert node.epoch is None

"""Pure: one node's lease on one document, in the node's own monotonic time.

The lease itself lives in the store (``storage/leases.py``): acquired and
renewed on the database's clock, with an epoch that every acquisition
increments and that the owner's commit transaction checks (the fencing
token). This module decides, with no I/O and no clock of its own (every
method takes ``now``, a ``time.monotonic()`` reading), when this node may
sequence the document, when to renew, and when to stop:

* **The local deadline.** The store answers an acquire or renew with the
  seconds left on the database's clock *at the moment it ran the statement*.
  That moment is after the node sent the request, so ``sent + remaining`` is
  never later than the real expiry; ``margin`` more is taken off for clock-rate
  drift and scheduling. Past the deadline the node sequences nothing, even if
  the store has not answered yet (a paused process wakes up past it).
* **Epochs only grow.** An acquisition must bring a higher epoch than any this
  node has seen for the document; a lower or equal one is a store bug and
  raises.
* **Fenced means stop at once.** A commit the store refused for a stale epoch
  (``FencedError``) ends ownership immediately; so does a renew the store
  refused (another node took the lease, or it expired). Only a new
  acquisition, with a new epoch, makes the node owner again — after it has
  reloaded the document from the store.

A failed renew (the store unreachable) changes nothing: the node keeps
sequencing until its deadline and retries at the next renew time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["LeaseTiming", "Ownership", "Phase"]


class Phase(enum.Enum):
    """Where this node stands with one document's lease."""

    #: No lease and not asking for one (another node may own the document).
    IDLE = "idle"
    #: An acquire is in flight.
    ACQUIRING = "acquiring"
    #: This node holds the lease; it may sequence until ``deadline``.
    OWNED = "owned"
    #: The store said the lease is no longer this node's (a renew was refused).
    LOST = "lost"
    #: A commit was refused for a stale epoch: another node owns the document.
    FENCED = "fenced"
    #: This node gave the lease back (hand-off, idle unload, shutdown).
    RELEASED = "released"


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """The lease's time-to-live, how often to renew it, and the safety margin (seconds).

    ``renew_every`` must leave at least two renew attempts before the local
    deadline, so one failed renew never costs the lease:
    ``2 * renew_every <= ttl - margin``.
    """

    ttl: float
    renew_every: float
    margin: float

    @classmethod
    def keeping_back(cls, ttl: float, renew_every: float, share: float) -> LeaseTiming:
        """The timing whose margin is ``share`` of ``ttl`` (``settings.LEASE_MARGIN``)."""
        return cls(ttl=ttl, renew_every=renew_every, margin=ttl * share)

    def __post_init__(self) -> None:
        if self.ttl <= 0 or self.renew_every <= 0 or self.margin < 0:
            raise ValueError("lease ttl and renew interval must be positive, margin not negative")
        if 2 * self.renew_every > self.ttl - self.margin:
            raise ValueError(
                f"lease renew interval {self.renew_every}s must fit twice in the ttl "
                f"{self.ttl}s less the margin {self.margin}s"
            )


class Ownership:
    """The lease state machine of one document on one node (see the module docstring)."""

    __slots__ = (
        "_deadline",
        "_epoch",
        "_highest",
        "_last_renew",
        "_renewing",
        "_timing",
        "phase",
    )

    def __init__(self, timing: LeaseTiming) -> None:
        self._timing = timing
        self.phase = Phase.IDLE
        self._epoch: int | None = None
        self._highest = 0
        self._deadline = float("-inf")
        self._last_renew = float("-inf")
        self._renewing = False

    # -- reading ------------------------------------------------------------------

    @property
    def epoch(self) -> int | None:
        """The epoch this node holds (None unless ``OWNED``): the commit's fencing token."""
        return self._epoch if self.phase is Phase.OWNED else None

    @property
    def highest_epoch(self) -> int:
        """The highest epoch this node has ever been granted for the document (0: none)."""
        return self._highest

    @property
    def deadline(self) -> float:
        """The local monotonic time after which this node must not sequence."""
        return self._deadline if self.phase is Phase.OWNED else float("-inf")

    def may_sequence(self, now: float) -> bool:
        """Whether this node may decide (sequence) an op at ``now``."""
        return self.phase is Phase.OWNED and now < self._deadline

    def renew_due(self, now: float, early: float = 0.0) -> bool:
        """Whether a renew should be sent at ``now`` (owned, none in flight, interval passed).

        ``early``: also if the interval passes within that many seconds (a renew
        sent with others that are due: renewing early only extends the deadline).
        """
        return (
            self.may_sequence(now)
            and not self._renewing
            and now + early >= self._last_renew + self._timing.renew_every
        )

    def next_wakeup(self, now: float) -> float | None:
        """When to look again: the next renew or the deadline, whichever is first (None: idle)."""
        if self.phase is not Phase.OWNED or now >= self._deadline:
            return None
        if self._renewing:
            return self._deadline
        return min(self._deadline, max(now, self._last_renew + self._timing.renew_every))

    # -- events ------------------------------------------------------------------

    def start_acquire(self, now: float) -> float:
        """An acquire is being sent at ``now``; returns ``now`` to hand back to ``acquired``."""
        if self.phase is Phase.OWNED and now < self._deadline:
            raise ValueError("already the owner: acquiring again would fence this node's commits")
        self.phase = Phase.ACQUIRING
        self._epoch = None
        return now

    def acquired(self, epoch: int, remaining: float, sent: float) -> None:
        """The store granted ``epoch`` with ``remaining`` s left, to a request sent at ``sent``."""
        if self.phase is not Phase.ACQUIRING:
            raise ValueError(f"no acquire in flight (phase {self.phase.value})")
        if epoch <= self._highest:
            raise ValueError(f"lease epoch went from {self._highest} to {epoch}: epochs only grow")
        self._highest = epoch
        self._epoch = epoch
        self.phase = Phase.OWNED
        self._deadline = sent + min(remaining, self._timing.ttl) - self._timing.margin
        self._last_renew = sent
        self._renewing = False

    def held_elsewhere(self) -> None:
        """The acquire found another node's live lease: this node does not own the document."""
        if self.phase is Phase.ACQUIRING:
            self.phase = Phase.IDLE

    def start_renew(self, now: float) -> float:
        """A renew is being sent at ``now``; returns ``now`` to hand back to ``renewed``."""
        if not self.may_sequence(now):
            raise ValueError("only an owner before its deadline renews")
        self._renewing = True
        self._last_renew = now
        return now

    def renewed(self, epoch: int, remaining: float, sent: float) -> None:
        """The store extended ``epoch``'s lease: ``remaining`` seconds as of after ``sent``."""
        self._renewing = False
        if self.phase is Phase.OWNED and epoch == self._epoch:
            extended = sent + min(remaining, self._timing.ttl) - self._timing.margin
            self._deadline = max(self._deadline, extended)

    def renew_failed(self) -> None:
        """The store could not be asked (an error): keep the deadline, try again next time."""
        self._renewing = False

    def lost(self, epoch: int) -> None:
        """The store refused to renew ``epoch``: expired or taken. Stop sequencing at once."""
        self._renewing = False
        if self.phase is Phase.OWNED and epoch == self._epoch:
            self.phase = Phase.LOST

    def fenced(self, epoch: int) -> None:
        """A commit under ``epoch`` was refused (a newer epoch exists). Stop at once."""
        if epoch > self._highest:
            raise ValueError(f"fenced at epoch {epoch}, never granted (highest {self._highest})")
        if self.phase is Phase.OWNED and epoch == self._epoch:
            self.phase = Phase.FENCED

    def released(self) -> None:
        """This node gave the lease back; it sequences nothing more until it acquires again."""
        self._renewing = False
        self.phase = Phase.RELEASED

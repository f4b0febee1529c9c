"""This node's document leases: acquired, renewed on time, released, losses reported.

``LeaseKeeper`` is the async shell around the pure ``session/ownership.py``:
it keeps one ``Ownership`` per document it asked for, runs one background task
that sleeps until the next renew or deadline, renews every due lease in one
statement (``Leases.renew_many``), and tells ``on_lost(doc)`` — once — when a
lease is gone: the store refused a renew, the local deadline passed (a renew
kept failing, or the process was paused), or a commit was fenced. The caller
then stops sequencing that document and moves its clients on.

``fence(doc)`` gives the epoch to pass to ``Store.commit(…, fence=…)``, or None
when this node may not sequence ``doc`` now. Times are ``clock()`` readings
(``time.monotonic`` unless a test passes another). ``session/owners.py`` uses
it for the document sessions (architecture.md, "Several nodes").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from tandem.metrics import Metrics
from tandem.session.ownership import LeaseTiming, Ownership, Phase
from tandem.storage.leases import Leases, LeaseState
from tandem.tasks import cancel_and_wait

__all__ = ["LeaseKeeper"]

log = logging.getLogger("tandem.lease")

#: Acquisitions tried in a row when each grant is over on arrival (see ``_acquire``).
_ACQUIRE_ATTEMPTS = 3


class LeaseKeeper:
    """Holds, renews and releases this node's document leases (see the module docstring)."""

    def __init__(
        self,
        leases: Leases,
        node: str,
        timing: LeaseTiming,
        metrics: Metrics,
        on_lost: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leases = leases
        self.node = node
        self._timing = timing
        self._metrics = metrics
        self._on_lost = on_lost
        self._clock = clock
        self._owned: dict[str, Ownership] = {}
        self._acquiring: dict[str, asyncio.Future[LeaseState]] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- reading ------------------------------------------------------------------

    def fence(self, doc: str) -> int | None:
        """The epoch to commit ``doc`` under, or None if this node may not sequence it now."""
        ownership = self._owned.get(doc)
        if ownership is None or not ownership.may_sequence(self._clock()):
            return None
        return ownership.epoch

    @property
    def owned(self) -> list[str]:
        """The documents whose lease this node holds."""
        return sorted(self._owned)

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tandem-leases")

    async def stop(self) -> None:
        """Stop renewing (the leases then lapse at their deadlines); keep what is held."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def close(self) -> None:
        """Stop renewing and release every lease, so other nodes take them at once."""
        await self.stop()
        await asyncio.gather(*(self.release(doc) for doc in list(self._owned)))

    # -- acquire, release, fenced ------------------------------------------------------

    async def acquire(self, doc: str) -> LeaseState:
        """Ask for ``doc``'s lease; the answer names the owner (this node if granted).

        Asking for a lease this node holds and may use returns it unchanged, and
        callers asking at the same time share one request: acquiring again would
        fence this node's own commits in flight.
        """
        pending = self._acquiring.get(doc)
        if pending is None:
            pending = asyncio.ensure_future(self._acquire(doc))
            self._acquiring[doc] = pending
            pending.add_done_callback(lambda _: self._acquiring.pop(doc, None))
        return await asyncio.shield(pending)

    async def _acquire(self, doc: str) -> LeaseState:
        ownership = self._owned.get(doc) or Ownership(self._timing)
        epoch = self.fence(doc)
        if epoch is not None:
            return LeaseState(doc, self.node, epoch, ownership.deadline - self._clock())
        for _ in range(_ACQUIRE_ATTEMPTS):
            sent = ownership.start_acquire(self._clock())
            try:
                state = await self._leases.acquire(doc, self.node, self._timing.ttl)
            except BaseException:
                ownership.held_elsewhere()
                raise
            if state.owner != self.node:
                ownership.held_elsewhere()
                self._forget(doc)
                return state
            ownership.acquired(state.epoch, state.remaining, sent)
            if ownership.may_sequence(self._clock()):
                break
            # Granted, but over by the time the answer came: the statement waited for
            # the lease row, locked by the owner's commit in flight (a paused process
            # holds it until it resumes), longer than the TTL, which counts from the
            # statement's start. An expired lease is granted again at once.
            log.info("lease of %s (epoch %d) was over on arrival; asking again", doc, state.epoch)
        self._owned[doc] = ownership
        self._metrics.lease_change("acquired")
        self._changed()
        log.debug("lease of %s acquired at epoch %d", doc, state.epoch)
        return state

    async def release(self, doc: str) -> None:
        """Give ``doc``'s lease back now (hand-off, unload); a failure only logs."""
        ownership = self._owned.pop(doc, None)
        if ownership is None:
            return
        epoch = ownership.epoch
        ownership.released()
        self._changed()
        if epoch is None:
            return
        self._metrics.lease_change("released")
        try:
            await self._leases.release(doc, self.node, epoch)
        except Exception as exc:  # noqa: BLE001 - the lease then simply expires
            log.warning("could not release the lease of %s (it will expire): %s", doc, exc)

    def fenced(self, doc: str, epoch: int) -> None:
        """A commit of ``doc`` under ``epoch`` was refused: stop at once and report it."""
        self._metrics.fenced_commit()
        ownership = self._owned.get(doc)
        if ownership is None:
            return
        ownership.fenced(epoch)
        if ownership.phase is Phase.FENCED:
            self._metrics.lease_change("fenced")
            self._lose(doc, f"a commit under epoch {epoch} was fenced")

    # -- renewing ------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            now = self._clock()
            for doc, ownership in list(self._owned.items()):
                if not ownership.may_sequence(now):
                    self._metrics.lease_change("lost")
                    self._lose(doc, "its local deadline passed")
            if any(ownership.renew_due(now) for ownership in self._owned.values()):
                # With the leases due within half an interval, so that every lease
                # this node holds soon renews at the same moments, in one statement.
                early = self._timing.renew_every / 2
                due = [doc for doc, o in self._owned.items() if o.renew_due(now, early)]
                await self._renew(due)
                continue
            wakeups = [w for o in self._owned.values() if (w := o.next_wakeup(now)) is not None]
            self._wakeup.clear()
            timeout = max(0.0, min(wakeups) - now) if wakeups else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _renew(self, due: list[str]) -> None:
        """Renew every lease of ``due`` in one statement (``Leases.renew_many``)."""
        now = self._clock()
        sent: dict[str, tuple[Ownership, int]] = {}
        for doc in due:
            ownership = self._owned.get(doc)
            if ownership is None or not ownership.may_sequence(now):
                # Released, or past the deadline since the renew was due (the process
                # was paused in between): the loop reports it lost, nothing to renew.
                continue
            epoch = ownership.epoch
            assert epoch is not None
            ownership.start_renew(now)
            sent[doc] = (ownership, epoch)
        if not sent:
            return
        held = [(doc, epoch) for doc, (_, epoch) in sent.items()]
        try:
            # A renew slower than the interval counts as failed; the deadlines still hold.
            renewed = await asyncio.wait_for(
                self._leases.renew_many(held, self.node, self._timing.ttl),
                self._timing.renew_every,
            )
        except Exception as exc:  # noqa: BLE001 - any failure: keep the leases to their deadlines
            for ownership, _ in sent.values():
                ownership.renew_failed()
            self._metrics.lease_renew_failed(len(sent))
            log.warning(
                "renewing %d leases failed (kept until their deadlines): %s", len(sent), exc
            )
            return
        for doc, (ownership, epoch) in sent.items():
            if self._owned.get(doc) is not ownership:
                continue  # released or lost meanwhile
            state = renewed.get(doc)
            if state is None:
                ownership.lost(epoch)
                self._metrics.lease_change("lost")
                self._lose(doc, "the store refused to renew it")
            else:
                ownership.renewed(state.epoch, state.remaining, now)

    # -- helpers ------------------------------------------------------------------

    def _lose(self, doc: str, why: str) -> None:
        self._owned.pop(doc, None)
        self._changed()
        log.warning("lost the lease of %s: %s", doc, why)
        self._on_lost(doc)

    def _forget(self, doc: str) -> None:
        if self._owned.pop(doc, None) is not None:
            self._changed()

    def _changed(self) -> None:
        self._metrics.set_owned_documents(len(self._owned))
        self._wakeup.set()

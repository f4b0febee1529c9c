"""Pure: what the ``authorize`` hook is asked, what it may answer, and what the answer means.

The hook (``tandem.hooks``, docs/extending.md) sees each op that is about to
commit, transformed to the head, in an ``AuthorizeRequest``; it answers
``None`` (commit it) or a ``Rejection`` (a short machine ``code`` and a
human ``reason``). ``verdict`` turns that answer — or the hook's failure (it
raised or timed out) — into the outcome counted in
``tandem_authorize_total{outcome}`` and the error the author gets, under the
failure policy ``Settings.authorize_failure``:

* ``"reject"`` (the default: fail closed): a failed call refuses the op with
  ``ERR_AUTHORIZE_FAILED``, as a demanding deployment expects of a rule it
  relies on (a locked range must not open up because the rule service is slow);
* ``"allow"`` (fail open): a failed call commits the op, and is counted.

``compensation`` is the op that takes a head back to where it was before an
op was applied: what a Yjs client whose update was rejected is sent, so that
its replica, which already holds the change, returns to the server's content.

Must not import asyncio, storage, bus or network code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from tandem.errors import AuthorizeFailed, Rejected
from tandem.ot.delta import Delta
from tandem.ot.document import Document
from tandem.ot.invert import invert

if TYPE_CHECKING:
    from tandem.auth import Principal

__all__ = [
    "AUTHORIZE_OUTCOMES",
    "FAILURE_POLICIES",
    "AuthorizeRequest",
    "Rejection",
    "compensation",
    "verdict",
]

#: ``Settings.authorize_failure``: what a failed (raised, timed out) call means.
FAILURE_POLICIES: Final = ("reject", "allow")
#: ``tandem_authorize_total{outcome}``.
AUTHORIZE_OUTCOMES: Final = ("allowed", "rejected", "failed_closed", "failed_open")
#: Where an op came from (``AuthorizeRequest.source``).
SOURCES: Final = ("op", "yjs", "merge")

#: A rejection's code: short and machine-readable, safe in a header or a log line.
_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: Longest reason a client is sent (a longer one is a hook bug: the call fails).
MAX_REASON: Final = 500


@dataclass(frozen=True, slots=True)
class Rejection:
    """The hook's "no": ``code`` (``[A-Za-z0-9_.:-]{1,64}``) and ``reason`` for the client."""

    code: str
    reason: str

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not _CODE.fullmatch(self.code):
            raise ValueError(f"a rejection code must match {_CODE.pattern}, got {self.code!r}")
        if not isinstance(self.reason, str) or len(self.reason) > MAX_REASON:
            raise ValueError(f"a rejection reason must be a str of at most {MAX_REASON} chars")


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    """One op about to commit, as the ``authorize`` hook sees it.

    ``op`` applies to ``document``, the head content (an immutable value kept by
    the sequencer: passing it costs nothing; ``len(document)``,
    ``document.slice(start, end)`` and ``document.text()`` read it, the last
    one in time proportional to the document). If the op commits it becomes
    ``version``. ``principal`` is the author's verified identity (None for a
    caller without one, such as an embedder's own peer); ``user``, ``name`` and
    ``client`` are always set. ``source``: ``"op"`` (``/collab`` or REST),
    ``"yjs"`` (``/yjs`` or ``/hocuspocus``) or ``"merge"`` (an offline
    merge's single commit op).
    """

    doc: str
    op: Delta
    version: int
    document: Document
    user: str
    name: str
    client: str
    principal: Principal | None
    source: str

    def result(self) -> Document:
        """The document the op would make (computed on each call)."""
        return self.document.apply(self.op)


def verdict(answer: object, failure: str | None, policy: str) -> tuple[str, Rejected | None]:
    """The outcome (``AUTHORIZE_OUTCOMES``) and the error to refuse with (None: commit).

    ``answer`` is what the hook returned; ``failure`` says why the call failed
    (None: it returned). An answer that is neither None nor a ``Rejection`` is a
    failure too.
    """
    if policy not in FAILURE_POLICIES:
        raise ValueError(f"authorize_failure must be one of {FAILURE_POLICIES}, got {policy!r}")
    if failure is None:
        if answer is None:
            return "allowed", None
        if isinstance(answer, Rejection):
            return "rejected", Rejected(answer.code, answer.reason)
        failure = f"the authorize hook returned {type(answer).__name__}, not None or a Rejection"
    if policy == "allow":
        return "failed_open", None
    return "failed_closed", AuthorizeFailed("tandem.authorize_failed", failure)


def compensation(op: Delta, before: Document) -> Delta:
    """The op that takes ``before.apply(op)`` back to ``before`` (formatting included)."""
    return invert(op, before)

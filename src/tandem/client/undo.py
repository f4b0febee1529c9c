"""Per-user undo and redo: the stacks, their grouping and their transforms.

The same algorithm as the JS client's ``client/src/undo.js``. Each stack entry
is the op that takes the current local document back (undo) or forward again
(redo), and the selection to restore after it. Undo only ever concerns our own
edits: an entry is the inverse of an edit of ours, and every op of someone
else's that arrives afterwards moves the entries past it, so undoing

* never deletes text another user inserted (our inverse's delete is split
  around their insert),
* never brings back text another user deleted (only text we deleted is in our
  inverse's inserts, and their delete of text we inserted makes our inverse's
  delete of it vanish), and
* leaves a later format of theirs in place (they take priority).

The stacks are ordered: the top entry applies to the current document, the
one below it to the document after the top one is applied. A remote op ``r``
is walked down from the top::

            ●  current document
       u_n / \\ r
          ●   ●
       r'  \\ / u_n' = transform(u_n, r, "right")   (r first)
            ●
    u_n-1  / \\ r' = transform(r, u_n, "left")      moves on to the next entry
          ...

Grouping: consecutive typing is one step. An edit joins the top entry when it
comes within ``delay`` seconds (0.5) of the previous one, is the same kind
(inserting or deleting plain text at one place, no newline), continues where
the previous one left off, and does not start a new word (a non-space typed
after a space). Anything else (a paste, a format, a newline, a jump
elsewhere, an undo) is its own step.

Bounded: at most ``max_stack`` entries each (oldest dropped); each remote op
costs one transform pair per entry.

Pure: no I/O, no asyncio, no clock (time is passed in).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from tandem.ot.compose import compose
from tandem.ot.cursor import transform_position, transform_selection
from tandem.ot.delta import Delete, Delta, Insert, Retain
from tandem.ot.document import Document
from tandem.ot.invert import invert
from tandem.ot.transform import transform

__all__ = ["GROUP_DELAY", "MAX_STACK", "Step", "Typing", "UndoManager", "caret_after", "typing_of"]

#: A pause this long (seconds) ends a typing group.
GROUP_DELAY: Final = 0.5
#: Entries kept per stack.
MAX_STACK: Final = 100

Selection = tuple[int, int]


@dataclass(slots=True)
class _Entry:
    op: Delta
    selection: Selection | None


@dataclass(frozen=True, slots=True)
class Typing:
    """An edit that is plain typing: one insert or delete at one place."""

    kind: Literal["insert", "delete"]
    start: int
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class Step:
    """What ``undo()``/``redo()`` returns: the edit to apply and the selection to restore."""

    delta: Delta
    selection: Selection | None


@dataclass(slots=True)
class _Group:
    kind: Literal["insert", "delete"]
    caret: int
    space: bool
    time: float


def typing_of(change: Delta) -> Typing | None:
    """The edit as typing (one plain insert or delete at one place), or None."""
    ops = change.ops
    at = 0
    i = 0
    if ops and type(ops[0]) is Retain and not ops[0].attributes:
        at = ops[0].count
        i = 1
    if len(ops) != i + 1:
        return None
    op = ops[i]
    if type(op) is Insert and not op.attributes and "\n" not in op.text:
        return Typing("insert", at, at + len(op.text), op.text)
    if type(op) is Delete:
        return Typing("delete", at, at + op.count, "")
    return None


def caret_after(op: Delta) -> Selection | None:
    """Where the caret goes after ``op``: after its last insert, else at its last delete."""
    at = 0
    caret: int | None = None
    for component in op.ops:
        kind = type(component)
        if kind is Insert:
            at += len(component)
            caret = at
        elif kind is Delete:
            caret = at
        else:
            at += len(component)
    return None if caret is None else (caret, 0)


class UndoManager:
    """Undo and redo stacks of one user's edits to one document."""

    def __init__(self, *, delay: float = GROUP_DELAY, max_stack: int = MAX_STACK) -> None:
        self.delay = delay
        self.max_stack = max_stack
        self.undo_stack: list[_Entry] = []
        self.redo_stack: list[_Entry] = []
        self._group: _Group | None = None

    @property
    def can_undo(self) -> bool:
        return bool(self.undo_stack)

    @property
    def can_redo(self) -> bool:
        return bool(self.redo_stack)

    def record(
        self,
        change: Delta,
        before: Document | Callable[[], Document],
        *,
        now: float = 0.0,
        selection: Selection | None = None,
    ) -> None:
        """A local edit was made on ``before``: remember how to take it back, forget redo.

        ``before`` may be a function, called only when the edit deletes or
        formats (typing needs no document). ``selection`` is the one before the edit.
        """
        inverse = _invert(change, before)
        if not inverse.ops:
            return
        self.redo_stack = []
        typing = typing_of(change)
        if typing is not None and self.undo_stack and self._joins(typing, now):
            top = self.undo_stack[-1]
            top.op = compose(inverse, top.op)  # ours first, then the group's earlier edits
        else:
            self._push(self.undo_stack, _Entry(inverse, selection))
        self._group = None
        if typing is not None:
            caret = typing.end if typing.kind == "insert" else typing.start
            space = typing.kind == "insert" and typing.text[-1].isspace()
            self._group = _Group(typing.kind, caret, space, now)

    def _joins(self, typing: Typing, now: float) -> bool:
        group = self._group
        if group is None or group.kind != typing.kind or now - group.time >= self.delay:
            return False
        if typing.kind == "delete":  # backspace, forward delete
            return group.caret in (typing.end, typing.start)
        if typing.start != group.caret:
            return False
        return not (group.space and not typing.text[0].isspace())  # a new word: a new step

    def cut(self) -> None:
        """End the open typing group: the next edit is a step of its own."""
        self._group = None

    def transform(self, remote: Delta) -> None:
        """Someone else's op was applied to the local document: move both stacks past it."""
        if not remote.ops:
            return
        _transform_stack(self.undo_stack, remote)
        _transform_stack(self.redo_stack, remote)
        if self._group is not None:
            self._group.caret = transform_position(self._group.caret, remote, "left")

    def undo(self, document: Document, selection: Selection | None = None) -> Step | None:
        """Take back our last step: the edit to apply (as a local edit, not recorded again)."""
        return self._move(self.undo_stack, self.redo_stack, document, selection)

    def redo(self, document: Document, selection: Selection | None = None) -> Step | None:
        """Do again the step last undone."""
        return self._move(self.redo_stack, self.undo_stack, document, selection)

    def _move(
        self,
        source: list[_Entry],
        target: list[_Entry],
        document: Document,
        selection: Selection | None,
    ) -> Step | None:
        self._group = None
        if not source:
            return None
        entry = source.pop()
        self._push(target, _Entry(invert(entry.op, document), selection))
        return Step(entry.op, entry.selection or caret_after(entry.op))

    def clear(self) -> None:
        """Forget both stacks."""
        self.undo_stack = []
        self.redo_stack = []
        self._group = None

    def _push(self, stack: list[_Entry], entry: _Entry) -> None:
        stack.append(entry)
        if len(stack) > self.max_stack:
            del stack[: len(stack) - self.max_stack]


def _invert(change: Delta, before: Document | Callable[[], Document]) -> Delta:
    if any(type(c) is Delete or (type(c) is Retain and c.attributes) for c in change.ops):
        return invert(change, before if isinstance(before, Document) else before())
    inverse = Delta()
    for component in change.ops:
        if type(component) is Insert:
            inverse.delete(len(component))
        else:
            inverse.retain(len(component))
    return inverse.chop()


def _transform_stack(stack: list[_Entry], remote: Delta) -> None:
    """Move a stack (top last) past a remote op on the current document."""
    r = remote
    for i in range(len(stack) - 1, -1, -1):
        if not r.ops:
            break
        entry = stack[i]
        op = transform(entry.op, r, "right")
        r = transform(r, entry.op, "left")
        if any(type(c) is not Retain or c.attributes for c in op.ops):
            selection = entry.selection
            if selection is not None:
                selection = transform_selection(*selection, r, "left")
            stack[i] = _Entry(op, selection)
        else:
            del stack[i]

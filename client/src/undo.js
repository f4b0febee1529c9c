/**
 * Per-user undo and redo: the stacks, their grouping and their transforms.
 * The same algorithm as the Python client's `tandem/client/undo.py`.
 *
 * Each stack entry is the op that takes the current local document back
 * (undo) or forward again (redo), and the selection to restore after it.
 * Undo only ever concerns our own edits: an entry is the inverse of an edit
 * of ours, and every op of someone else's that arrives afterwards moves the
 * entries past it (Quill's `history` transform, but fed only with remote
 * ops), so undoing
 *
 *   - never deletes text another user inserted (our inverse's delete is
 *     split around their insert), and
 *   - never brings back text another user deleted (only text we deleted is
 *     in our inverse's inserts, and their delete of text we inserted makes
 *     our inverse's delete of it vanish);
 *   - a later format of theirs wins over our undone format (they take
 *     priority in the transform).
 *
 * The stacks are ordered: the top entry applies to the current document, the
 * one below it to the document after the top one is applied, and so on. A
 * remote op `r` is therefore walked down from the top:
 *
 *          ●  current document
 *     u_n / \ r
 *        ●   ●
 *     r'  \ / u_n' = T(u_n, r)      (r first: it has priority)
 *          ●
 *   u_n-1 / \ r'                    r' = T(r, u_n) moves on to the next entry
 *        ...
 *
 * Grouping: consecutive typing is one step. An edit joins the top entry when
 * it comes within `delay` ms (500) of the previous one, is the same kind
 * (inserting or deleting plain text at one place, no newline), continues
 * where the previous one left off, and does not start a new word (a
 * non-space typed after a space). Anything else (a paste, a format, a
 * newline, a jump elsewhere, an undo) is its own step.
 *
 * Bounded: at most `maxStack` entries each (oldest dropped). Each remote op
 * costs one transform pair per entry.
 *
 * Pure: no I/O, no timers, no events (time is passed in). Deltas count
 * UTF-16 units, as quill-delta does. Imports nothing but quill-delta.
 */
import Delta from 'quill-delta';

/** A pause this long (ms) ends a typing group. */
export const GROUP_DELAY = 500;
/** Entries kept per stack. */
export const MAX_STACK = 100;

/**
 * @typedef {{index: number, length: number}} Range
 * @typedef {{op: Delta, selection: Range | null}} Entry
 *   `op` applies to the document at this entry's place in its stack;
 *   `selection` is where the caret goes after `op` is applied (null: after
 *   the op's last insert, or at its last delete)
 * @typedef {{kind: 'insert' | 'delete', start: number, end: number, text: string}} Typing
 * @typedef {{delta: Delta, selection: Range | null}} Step  what undo()/redo() returns
 */

const SPACE = /\s/;

/**
 * The edit as typing (one plain insert or delete at one place), or null.
 * @param {Delta} change
 * @returns {Typing | null}
 */
export function typingOf(change) {
  const ops = change.ops;
  let at = 0;
  let i = 0;
  if (ops.length && typeof ops[0].retain === 'number' && !ops[0].attributes) at = ops[i++].retain;
  if (ops.length !== i + 1) return null;
  const op = ops[i];
  if (typeof op.insert === 'string' && !op.attributes && op.insert.length && !op.insert.includes('\n')) {
    return { kind: 'insert', start: at, end: at + op.insert.length, text: op.insert };
  }
  if (typeof op.delete === 'number') return { kind: 'delete', start: at, end: at + op.delete, text: '' };
  return null;
}

/**
 * Where the caret goes after `op`: after its last insert, else at its last delete.
 * @param {Delta} op
 * @returns {Range | null}
 */
export function caretAfter(op) {
  let at = 0;
  let caret = null;
  for (const c of op.ops) {
    if (c.insert !== undefined) {
      at += typeof c.insert === 'string' ? c.insert.length : 1;
      caret = at;
    } else if (c.delete !== undefined) {
      caret = at;
    } else {
      at += typeof c.retain === 'number' ? c.retain : 1;
    }
  }
  return caret === null ? null : { index: caret, length: 0 };
}

/**
 * @param {Range | null} range
 * @param {Delta} delta
 * @returns {Range | null}
 */
function moveRange(range, delta) {
  if (!range) return null;
  const start = delta.transformPosition(range.index, true);
  const end = delta.transformPosition(range.index + range.length, true);
  return { index: start, length: Math.max(0, end - start) };
}

export class UndoManager {
  /** @param {{delay?: number, maxStack?: number}} [options] */
  constructor({ delay = GROUP_DELAY, maxStack = MAX_STACK } = {}) {
    this.delay = delay;
    this.maxStack = maxStack;
    /** @type {Entry[]} */
    this.undoStack = [];
    /** @type {Entry[]} */
    this.redoStack = [];
    /** @type {{kind: Typing['kind'], caret: number, space: boolean, time: number} | null} the open typing group */
    this._group = null;
  }

  get canUndo() {
    return this.undoStack.length > 0;
  }

  get canRedo() {
    return this.redoStack.length > 0;
  }

  /**
   * A local edit was made: remember how to take it back, and forget redo.
   * @param {Delta} change  the edit, on `before`
   * @param {Delta | (() => Delta)} before  the local document before it (a
   *   function is called only when the edit deletes or formats: typing does
   *   not need the document)
   * @param {{now?: number, selection?: Range | null}} [options]  selection: before the edit
   */
  record(change, before, { now = 0, selection = null } = {}) {
    const inverse = invert(change, before);
    if (!inverse.ops.length) return;
    this.redoStack = [];
    const typing = typingOf(change);
    const top = this.undoStack[this.undoStack.length - 1];
    if (typing && top && this._joins(typing, now)) {
      top.op = inverse.compose(top.op); // ours first, then the group's earlier edits
    } else {
      this._push(this.undoStack, { op: inverse, selection });
    }
    this._group = typing && {
      kind: typing.kind,
      caret: typing.kind === 'insert' ? typing.end : typing.start,
      space: typing.kind === 'insert' && SPACE.test(typing.text[typing.text.length - 1]),
      time: now,
    };
  }

  /**
   * @param {Typing} typing
   * @param {number} now
   */
  _joins(typing, now) {
    const g = this._group;
    if (!g || g.kind !== typing.kind || now - g.time >= this.delay) return false;
    if (typing.kind === 'delete') return typing.end === g.caret || typing.start === g.caret; // backspace, forward delete
    if (typing.start !== g.caret) return false;
    return !(g.space && !SPACE.test(typing.text[0])); // a new word starts a new step
  }

  /** End the open typing group: the next edit is a step of its own. */
  cut() {
    this._group = null;
  }

  /**
   * Someone else's op was applied to the local document: move both stacks past it.
   * @param {Delta} remote  on the local document
   */
  transform(remote) {
    if (!remote.ops.length) return;
    transformStack(this.undoStack, remote);
    transformStack(this.redoStack, remote);
    if (this._group) this._group.caret = remote.transformPosition(this._group.caret, true);
  }

  /**
   * Take back our last step. Returns the edit to apply to the local document
   * (as a local edit, not recorded again) and the selection to restore.
   * @param {Delta} doc  the local document now
   * @param {Range | null} [selection]  the selection now (restored by a redo)
   * @returns {Step | null}
   */
  undo(doc, selection = null) {
    return this._move(this.undoStack, this.redoStack, doc, selection);
  }

  /**
   * Do again the step last undone.
   * @param {Delta} doc
   * @param {Range | null} [selection]
   * @returns {Step | null}
   */
  redo(doc, selection = null) {
    return this._move(this.redoStack, this.undoStack, doc, selection);
  }

  /**
   * @param {Entry[]} from
   * @param {Entry[]} to
   * @param {Delta} doc
   * @param {Range | null} selection
   */
  _move(from, to, doc, selection) {
    this._group = null;
    const entry = from.pop();
    if (!entry) return null;
    this._push(to, { op: entry.op.invert(doc), selection });
    return { delta: entry.op, selection: entry.selection ?? caretAfter(entry.op) };
  }

  /** Forget both stacks (e.g. when the document was replaced). */
  clear() {
    this.undoStack = [];
    this.redoStack = [];
    this._group = null;
  }

  /**
   * @param {Entry[]} stack
   * @param {Entry} entry
   */
  _push(stack, entry) {
    stack.push(entry);
    if (stack.length > this.maxStack) stack.splice(0, stack.length - this.maxStack);
  }
}

/**
 * @param {Delta} change
 * @param {Delta | (() => Delta)} before
 */
function invert(change, before) {
  if (change.ops.some((c) => c.insert === undefined && (c.delete !== undefined || c.attributes || typeof c.retain === 'object'))) {
    return change.invert(typeof before === 'function' ? before() : before);
  }
  const inverse = new Delta();
  for (const c of change.ops) {
    if (c.insert !== undefined) inverse.delete(typeof c.insert === 'string' ? c.insert.length : 1);
    else inverse.retain(/** @type {number} */ (c.retain));
  }
  return inverse.chop();
}

/**
 * Move a stack (top last) past a remote op on the current document.
 * @param {Entry[]} stack
 * @param {Delta} remote
 */
function transformStack(stack, remote) {
  let r = remote;
  for (let i = stack.length - 1; i >= 0 && r.ops.length; i--) {
    const entry = stack[i];
    const op = r.transform(entry.op, true);
    r = entry.op.transform(r, false);
    if (op.ops.length && !isIdentity(op)) {
      stack[i] = { op, selection: moveRange(entry.selection, r) };
    } else {
      stack.splice(i, 1);
    }
  }
}

/** @param {Delta} op */
function isIdentity(op) {
  return op.ops.every((c) => c.retain !== undefined && !c.attributes);
}

import test from 'node:test';
import assert from 'node:assert/strict';
import Delta from 'quill-delta';
import { ClientState } from '../src/state.js';
import { UndoManager, typingOf } from '../src/undo.js';
import { rngFrom } from './support/random.mjs';

const d = (ops) => new Delta(ops);
const text = (doc) => doc.ops.map((o) => (typeof o.insert === 'string' ? o.insert : '\uFFFC')).join('');

/** Type `s` one character at a time at `at`, `gap` ms apart, recording each keystroke. */
function type(undo, doc, at, s, { now = 0, gap = 100 } = {}) {
  for (const [i, ch] of [...s].entries()) {
    const change = new Delta().retain(at + i).insert(ch);
    undo.record(change, doc, { now: now + i * gap });
    doc = doc.compose(change);
  }
  return doc;
}

test('typing groups into words and pauses; undo and redo step through them', () => {
  const undo = new UndoManager();
  let doc = type(undo, d([]), 0, 'hello world');
  assert.equal(undo.undoStack.length, 2, '"hello " and "world"');
  doc = type(undo, doc, 11, '!', { now: 5000 }); // after a pause
  assert.equal(undo.undoStack.length, 3);
  let step = undo.undo(doc);
  doc = doc.compose(step.delta);
  assert.equal(text(doc), 'hello world');
  assert.deepEqual(step.selection, { index: 11, length: 0 });
  doc = doc.compose(undo.undo(doc).delta);
  assert.equal(text(doc), 'hello ');
  assert.ok(undo.canRedo);
  doc = doc.compose(undo.redo(doc).delta);
  assert.equal(text(doc), 'hello world');
  // a new edit forgets what could be redone
  doc = type(undo, doc, 0, 'X', { now: 9000 });
  assert.equal(undo.canRedo, false);
  assert.equal(text(doc), 'Xhello world');
});

test('only plain typing at one place groups', () => {
  assert.deepEqual(typingOf(d([{ retain: 2 }, { insert: 'a' }])), { kind: 'insert', start: 2, end: 3, text: 'a' });
  assert.equal(typingOf(d([{ retain: 2 }, { insert: 'a\n' }])), null);
  assert.equal(typingOf(d([{ retain: 2, attributes: { bold: true } }])), null);
  assert.equal(typingOf(d([{ retain: 2 }, { delete: 1 }, { insert: 'x' }])), null);
  const undo = new UndoManager();
  let doc = type(undo, d([]), 0, 'abc');
  undo.record(d([{ retain: 1 }, { insert: 'z' }]), doc, { now: 300 }); // a jump elsewhere
  doc = doc.compose(d([{ retain: 1 }, { insert: 'z' }]));
  assert.equal(undo.undoStack.length, 2);
  // backspacing is one step
  for (let i = 0; i < 3; i++) {
    const change = d([{ retain: 3 - i }, { delete: 1 }]);
    undo.record(change, doc, { now: 400 + i * 10 });
    doc = doc.compose(change);
  }
  assert.equal(text(doc), 'a');
  assert.equal(undo.undoStack.length, 3);
  doc = doc.compose(undo.undo(doc).delta);
  assert.equal(text(doc), 'azbc');
});

test('the selection before the edit is restored, moved by later remote edits', () => {
  const undo = new UndoManager();
  let doc = d([{ insert: 'abc' }]);
  const change = d([{ retain: 1 }, { delete: 1 }]);
  undo.record(change, doc, { selection: { index: 1, length: 1 } });
  doc = doc.compose(change);
  const remote = d([{ insert: 'XY' }]);
  doc = doc.compose(remote);
  undo.transform(remote);
  const step = undo.undo(doc, { index: 3, length: 0 });
  doc = doc.compose(step.delta);
  assert.equal(text(doc), 'XYabc');
  assert.deepEqual(step.selection, { index: 3, length: 1 });
  assert.deepEqual(undo.redo(doc).selection, { index: 3, length: 0 });
});

test('undo keeps text another user typed inside ours, and does not bring back what they deleted', () => {
  const undo = new UndoManager();
  let doc = type(undo, d([]), 0, 'hello');
  const theirs = d([{ retain: 2 }, { insert: 'XY' }]);
  undo.transform(theirs);
  doc = doc.compose(theirs);
  doc = doc.compose(undo.undo(doc).delta);
  assert.equal(text(doc), 'XY');
  doc = doc.compose(undo.redo(doc).delta);
  assert.equal(text(doc), 'heXYllo');

  const u2 = new UndoManager();
  let doc2 = d([{ insert: 'abcdef' }]);
  const mine = d([{ retain: 1 }, { delete: 2 }]); // I delete "bc"
  u2.record(mine, doc2);
  doc2 = doc2.compose(mine);
  const gone = d([{ delete: 4 }]); // they delete "adef"
  u2.transform(gone);
  doc2 = doc2.compose(gone);
  doc2 = doc2.compose(u2.undo(doc2).delta);
  assert.equal(text(doc2), 'bc', 'only my deletion comes back');
});

test("an entry another user's edits emptied is dropped; the stacks are bounded", () => {
  const undo = new UndoManager({ maxStack: 3 });
  let doc = d([]);
  for (let i = 0; i < 5; i++) doc = type(undo, doc, i, 'x', { now: i * 10000 });
  assert.equal(undo.undoStack.length, 3);
  const wipe = d([{ delete: 5 }]);
  undo.transform(wipe);
  assert.equal(undo.canUndo, false);
});

// ---- seeded simulation ------------------------------------------------------

/** One unique character per inserted character, so identity is visible in the text. */
const UNIQUE = 0x4e00;
const isUnique = (ch) => ch.charCodeAt(0) >= UNIQUE && ch.charCodeAt(0) < UNIQUE + 0x5000;

function counts(doc) {
  const m = new Map();
  for (const ch of text(doc)) if (isUnique(ch)) m.set(ch, (m.get(ch) ?? 0) + 1);
  return m;
}

/** Characters whose count fell (removed) and rose (appeared) between two documents. */
function changed(before, after) {
  const a = counts(before);
  const b = counts(after);
  const removed = [...a].filter(([ch, n]) => (b.get(ch) ?? 0) < n).map(([ch]) => ch);
  const appeared = [...b].filter(([ch, n]) => (a.get(ch) ?? 0) < n).map(([ch]) => ch);
  return { removed, appeared };
}

const baseLength = (op) => op.ops.reduce((n, c) => n + (c.insert !== undefined ? 0 : typeof c.retain === 'object' ? 1 : c.retain ?? c.delete), 0);

/** An undo manager that applies the inverse as is: what the properties must catch. */
class NaiveUndo extends UndoManager {
  transform() {}
}

/**
 * Several users edit, undo and redo at random over FIFO channels to one
 * server; returns the property violations seen (undo or redo removing a
 * character the user never inserted, or bringing back one the user never
 * deleted) and checks convergence.
 */
function simulate(seed, Undo = UndoManager) {
  const rng = rngFrom(seed);
  let fresh = UNIQUE;
  const server = { history: [], doc: d([{ insert: 'ab' }]) };
  const users = rng.int(3) + 2;
  const clients = Array.from({ length: users }, (_, i) => ({
    id: `c${i}`, state: new ClientState({ version: 0 }), doc: server.doc, undo: new Undo(),
    mine: new Set(), deleted: new Set(), up: [], down: [], caret: 0,
  }));
  const violations = [];
  let now = 0;
  let steps = 0;

  const submit = (c, msg) => {
    let op = d(msg.op);
    for (const h of server.history.slice(msg.v)) op = h.transform(op, true);
    server.doc = server.doc.compose(op);
    server.history.push(op);
    const v = server.history.length;
    for (const other of clients) other.down.push(other === c ? { type: 'ack', v } : { type: 'op', v, op });
  };
  const receive = (c, msg) => {
    if (msg.type === 'ack') {
      c.state.applyAck(msg.v);
      const out = c.state.outgoing();
      if (out) c.up.push(out);
      return;
    }
    const applied = c.state.applyRemote(msg.v, d(msg.op));
    c.doc = c.doc.compose(applied);
    c.undo.transform(applied);
    c.caret = applied.transformPosition(c.caret, true);
  };
  const local = (c, change) => {
    const { removed, appeared } = changed(c.doc, c.doc.compose(change));
    for (const ch of removed) c.deleted.add(ch);
    for (const ch of appeared) c.mine.add(ch);
    c.doc = c.doc.compose(change);
    if (c.state.applyLocal(change)) c.up.push(c.state.outgoing());
  };
  const edit = (c) => {
    const length = text(c.doc).length;
    const roll = rng.next();
    let change;
    if (roll < 0.6 || length === 0) {
      const at = rng.next() < 0.6 ? Math.min(c.caret, length) : rng.int(length + 1);
      let s = '';
      for (let i = rng.next() < 0.8 ? 1 : 1 + rng.int(4); i > 0; i--) s += rng.next() < 0.15 ? ' ' : String.fromCharCode(fresh++);
      change = new Delta().retain(at).insert(s, rng.next() < 0.1 ? { bold: true } : undefined);
      c.caret = at + s.length;
    } else {
      const at = rng.int(length);
      const n = Math.min(length - at, 1 + rng.int(3));
      change = roll < 0.9 ? new Delta().retain(at).delete(n) : new Delta().retain(at).retain(n, { italic: rng.next() < 0.5 ? true : null });
      c.caret = at;
    }
    c.undo.record(change.chop(), c.doc, { now });
    local(c, change.chop());
  };
  const step = (c, redo) => {
    const s = redo ? c.undo.redo(c.doc) : c.undo.undo(c.doc);
    if (!s) return;
    const what = `seed ${seed}: ${c.id} ${redo ? 'redo' : 'undo'}`;
    if (baseLength(s.delta) > text(c.doc).length) {
      violations.push(`${what} does not fit the document`);
      return;
    }
    const { removed, appeared } = changed(c.doc, c.doc.compose(s.delta));
    for (const ch of removed) if (!c.mine.has(ch)) violations.push(`${what} removed ${ch}, which another user inserted`);
    for (const ch of appeared) if (!c.deleted.has(ch)) violations.push(`${what} brought back ${ch}, which another user deleted`);
    local(c, s.delta);
    steps++;
  };

  const act = (c) => {
    const roll = rng.next();
    if (roll < 0.3) edit(c);
    else if (roll < 0.4) step(c, false);
    else if (roll < 0.45) step(c, true);
    else if (roll < 0.7) c.up.length && submit(c, c.up.shift());
    else c.down.length && receive(c, c.down.shift());
  };
  const drain = () => {
    while (clients.some((c) => c.up.length || c.down.length)) {
      for (const c of clients) {
        if (c.up.length) submit(c, c.up.shift());
        if (c.down.length) receive(c, c.down.shift());
      }
    }
  };
  for (let i = 0; i < 150; i++) {
    now += rng.pick([10, 50, 200, 700]);
    act(rng.pick(clients));
  }
  // then everyone undoes (and now and then redoes) while the others' ops arrive
  for (let i = 0; i < 120; i++) {
    const c = rng.pick(clients);
    if (rng.next() < 0.5) step(c, rng.next() < 0.2);
    else act(c);
  }
  drain();
  for (const c of clients) {
    assert.equal(c.state.name, 'synchronized', `seed ${seed}: ${c.id}`);
    assert.deepEqual(c.doc.ops, server.doc.ops, `seed ${seed}: ${c.id} converged`);
  }
  return { violations, committed: server.history.length, steps };
}

test('1,000 seeded sessions: edits, undos and redos converge; undo touches only its own user\'s text', () => {
  const first = process.env.TANDEM_SEED ? Number(process.env.TANDEM_SEED) : 1;
  const seeds = process.env.TANDEM_SEED ? 1 : 1000;
  let committed = 0;
  let steps = 0;
  for (let seed = first; seed < first + seeds; seed++) {
    const run = simulate(seed);
    assert.deepEqual(run.violations, [], `replay with TANDEM_SEED=${seed}`);
    committed += run.committed;
    steps += run.steps;
  }
  console.log(`# ${seeds} seeds: ${committed} ops committed, ${steps} undos and redos`);
  assert.ok(committed > seeds * 10 && steps > seeds * 20, `${committed} ops committed, ${steps} undos and redos`);
});

test('the properties catch a naive undo (the inverse applied without transforming it)', () => {
  // the plain case: I type "hello", someone types "XY" in front, I undo
  const naive = new NaiveUndo();
  let doc = type(naive, d([]), 0, 'hello');
  const theirs = d([{ insert: 'XY' }]);
  naive.transform(theirs);
  doc = doc.compose(theirs);
  assert.equal(text(doc.compose(naive.undo(doc).delta)), 'lo', 'the naive undo deletes "XY"');
  // and the random sessions flag it in most seeds
  let caught = 0;
  for (let seed = 1; seed <= 100; seed++) if (simulate(seed, NaiveUndo).violations.length) caught++;
  console.log(`# the naive undo was caught in ${caught} of 100 seeds`);
  assert.ok(caught >= 50, `caught in ${caught} of 100 seeds`);
});

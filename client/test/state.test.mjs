import test from 'node:test';
import assert from 'node:assert/strict';
import Delta from 'quill-delta';
import { ClientState, transformCursor, positionInverse } from '../src/state.js';
import { seeded, randomEdit } from './support/random.mjs';

const d = (ops) => new Delta(ops);

test('the three states', () => {
  const s = new ClientState({ version: 4 });
  assert.equal(s.name, 'synchronized');
  assert.equal(s.applyLocal(d([{ retain: 2 }, { insert: '!' }])), true);
  assert.deepEqual(s.outgoing(), { v: 4, seq: 1, op: [{ retain: 2 }, { insert: '!' }] });
  assert.equal(s.name, 'awaitingAck');
  assert.equal(s.applyLocal(d([{ retain: 3 }, { insert: '?' }])), false);
  assert.equal(s.name, 'awaitingAckWithBuffer');
  assert.deepEqual(s.applyAck(5).ops, [{ retain: 2 }, { insert: '!' }]);
  assert.equal(s.name, 'awaitingAck');
  assert.deepEqual(s.outgoing(), { v: 5, seq: 2, op: [{ retain: 3 }, { insert: '?' }] });
  s.applyAck(6);
  assert.equal(s.name, 'synchronized');
  assert.equal(s.version, 6);
});

test('protocol worked example: Bob transforms Alice\'s op against his in-flight op', () => {
  // Hi at v4; Bob sent "?" at 2, receives Alice's "!" at 2 committed as v5.
  const bob = new ClientState({ version: 4 });
  bob.applyLocal(d([{ retain: 2 }, { insert: '?' }]));
  bob.outgoing(); // sent at v4
  const applied = bob.applyRemote(5, d([{ retain: 2 }, { insert: '!' }]));
  assert.deepEqual(applied.ops, [{ retain: 2 }, { insert: '!' }]); // stays before his "?"
  assert.deepEqual(bob.inflight.op.ops, [{ retain: 3 }, { insert: '?' }]);
  // the resend is the op as first submitted, with its base and seq
  assert.deepEqual(bob.outgoing(), { v: 4, seq: 1, op: [{ retain: 2 }, { insert: '?' }] });
  const doc = d([{ insert: 'Hi' }]).compose(d([{ retain: 2 }, { insert: '?' }])).compose(applied);
  assert.equal(doc.ops[0].insert, 'Hi!?');
});

test('classify, a no-op ack, drop, and rebased resend', () => {
  const s = new ClientState({ version: 7 });
  assert.equal(s.classify(7), 'duplicate');
  assert.equal(s.classify(8), 'apply');
  assert.equal(s.classify(9), 'gap');
  s.applyLocal(d([{ delete: 1 }]));
  assert.equal(s.applyAck(7), null); // turned into a no-op: no version created
  assert.equal(s.version, 7);
  s.applyLocal(d([{ insert: 'a' }]));
  s.outgoing();
  s.applyLocal(d([{ insert: 'b' }]));
  s.applyRemote(8, d([{ insert: 'X' }]));
  assert.deepEqual(s.rebasedOutgoing(), { v: 8, seq: 2, op: [{ retain: 1 }, { insert: 'a' }] });
  assert.deepEqual(s.drop().ops, [{ retain: 1 }, { insert: 'ba' }]);
  assert.equal(s.name, 'synchronized');
  assert.throws(() => s.applyAck(9));
  assert.throws(() => s.applyRemote(10, d([{ insert: 'x' }])), RangeError);
});

test('encode is called once, at the version the op becomes in flight', () => {
  const seen = [];
  const s = new ClientState({ version: 1, encode: (op) => (seen.push(s.version), op.ops) });
  s.applyLocal(d([{ insert: 'a' }]));
  s.applyRemote(2, d([{ insert: 'x' }])); // not sent yet: encoded lazily at v2
  s.outgoing();
  s.outgoing();
  assert.deepEqual(seen, [2]);
});

test('toJSON / fromJSON round trip', () => {
  const s = new ClientState({ version: 3, nextSeq: 10 });
  s.applyLocal(d([{ insert: 'a' }]));
  s.outgoing();
  s.applyLocal(d([{ retain: 1 }, { insert: 'b', attributes: { bold: true } }]));
  const copy = ClientState.fromJSON(JSON.parse(JSON.stringify(s.toJSON())));
  assert.deepEqual(copy.toJSON(), s.toJSON());
  assert.equal(copy.name, 'awaitingAckWithBuffer');
});

test('cursors: a remote insert at a caret leaves it before; the owner\'s own pushes it', () => {
  const ins = d([{ retain: 2 }, { insert: 'xyz' }]);
  assert.deepEqual(transformCursor({ index: 2, length: 0 }, ins, false), { index: 2, length: 0 });
  assert.deepEqual(transformCursor({ index: 2, length: 0 }, ins, true), { index: 5, length: 0 });
  assert.deepEqual(transformCursor({ index: 1, length: 3 }, ins, false), { index: 1, length: 6 });
  // our pending edit on "pqrst": insert "ab" after p, delete "qr" → "pabst"
  const back = positionInverse(d([{ retain: 1 }, { insert: 'ab' }, { delete: 2 }]));
  assert.equal(back.transformPosition(3, true), 3); // after our "ab": before "s", the edge of our edit
  assert.equal(back.transformPosition(4, true), 4); // after "s": after "s"
  assert.equal(back.transformPosition(0, true), 0);
});

/**
 * A seeded simulation: an in-memory server (one history, ops transformed
 * against it one at a time, de-duplicated by (client, seq)) and clients over
 * FIFO channels that lose messages on disconnect and catch up on reconnect.
 */
test('random concurrent edits, disconnects and resends converge', () => {
  const rng = seeded('state machine simulation');
  const server = { history: [], doc: d([{ insert: 'hello' }]), done: new Map() };
  const start = server.doc;
  const clients = Array.from({ length: 4 }, (_, i) => ({
    id: `c${i}`, state: new ClientState({ version: 0 }), doc: start, online: true, up: [], down: [], typed: 0,
  }));

  const submit = (c, msg) => {
    const key = `${c.id}:${msg.seq}`;
    if (server.done.has(key)) return c.down.push({ type: 'ack', v: server.done.get(key), seq: msg.seq });
    let op = d(msg.op);
    for (const h of server.history.slice(msg.v)) op = h.op.transform(op, true); // transform(op, h, "right")
    server.doc = server.doc.compose(op);
    server.history.push({ op, client: c.id, seq: msg.seq });
    const v = server.history.length;
    server.done.set(key, v);
    for (const other of clients) {
      if (!other.online) continue;
      other.down.push(other === c ? { type: 'ack', v, seq: msg.seq } : { type: 'op', v, op, client: c.id, seq: msg.seq });
    }
  };
  const receive = (c, msg) => {
    const f = c.state.inflight;
    if (msg.type === 'ack' || (f && msg.client === c.id && msg.seq === f.seq)) {
      if (!f || msg.seq !== f.seq || msg.v <= c.state.version - 0 && msg.v !== c.state.version + 1) return;
      c.state.applyAck(msg.v);
      const out = c.state.outgoing();
      if (out && c.online) c.up.push(out);
      return;
    }
    if (c.state.classify(msg.v) !== 'apply') return;
    c.doc = c.doc.compose(c.state.applyRemote(msg.v, msg.op));
  };
  const reconnect = (c) => {
    c.online = true;
    // catchup: every op after our version, ours recognised by (client, seq)
    server.history.slice(c.state.version).forEach((h, i) => receive(c, { type: 'op', v: c.state.version + 1, op: h.op, client: h.client, seq: h.seq }));
    const out = c.state.outgoing();
    if (out) c.up.push(out);
  };

  for (let step = 0; step < 4000; step++) {
    const c = rng.pick(clients);
    const roll = rng.next();
    if (roll < 0.35) {
      const ops = randomEdit(rng, c.doc.ops.map((o) => o.insert).join(''));
      c.doc = c.doc.compose(d(ops));
      if (c.state.applyLocal(d(ops)) && c.online) c.up.push(c.state.outgoing());
    } else if (roll < 0.6) {
      if (c.up.length) submit(c, c.up.shift());
    } else if (roll < 0.9) {
      if (c.down.length) receive(c, c.down.shift());
    } else if (roll < 0.95) {
      if (c.online) {
        // messages on the wire may or may not make it
        for (const msg of c.up) if (rng.next() < 0.5) submit(c, msg);
        c.up = [];
        c.down = [];
        c.online = false;
      } else {
        reconnect(c);
      }
    } else if (roll < 0.97 && c.online && c.state.inflight) {
      c.up.push(c.state.outgoing()); // a duplicate resubmit
    }
  }
  // drain
  for (const c of clients) if (!c.online) reconnect(c);
  for (let guard = 0; clients.some((c) => c.up.length || c.down.length); guard++) {
    assert.ok(guard < 100000, 'drain terminates');
    for (const c of clients) {
      if (c.up.length) submit(c, c.up.shift());
      if (c.down.length) receive(c, c.down.shift());
    }
  }
  for (const c of clients) {
    assert.equal(c.state.name, 'synchronized', c.id);
    assert.deepEqual(c.doc.ops, server.doc.ops, `${c.id} converged`);
  }
  assert.ok(server.history.length > 200, `committed ${server.history.length} ops`);
});

// The offline merge (docs/protocol.md, "Offline merge"): the pure state
// machine by hand, then the document's use of it against a scripted fake socket.
import test from 'node:test';
import assert from 'node:assert/strict';
import Delta from 'quill-delta';
import { ClientState, MERGE_AT, TandemClient, MemoryStorage } from '../src/index.js';
import { seeded, randomEdit } from './support/random.mjs';
import { FakeSocket } from './support/fake-socket.mjs';

const d = (ops) => new Delta(ops);
const textOf = (doc) => doc.ops.map((op) => op.insert).join('');

/**
 * The server's side of a merge, as the server computes it: both branches from
 * the base composed to one delta each, one transform pair, the server's text
 * first at a tie. Returns the op for the client (its final state → merged).
 */
function mergeReply(serverOps, branch) {
  const s = serverOps.reduce((a, b) => a.compose(b), new Delta());
  const c = branch.reduce((a, b) => a.compose(b), new Delta());
  return { catchup: c.transform(s, false), commit: s.transform(c, true) };
}

// ---- the state machine ----------------------------------------------------------

test('mergeCost counts components of the composed pending edits; shouldMerge applies the threshold', () => {
  const s = new ClientState({ version: 3 });
  assert.equal(MERGE_AT, 1000);
  assert.equal(s.mergeCost(100), 0);
  assert.equal(s.shouldMerge(5000), false); // nothing pending
  s.applyLocal(d([{ retain: 1 }, { insert: 'x' }]));
  assert.equal(s.mergeCost(10), 20);
  for (let i = 0; i < 50; i++) s.applyLocal(d([{ retain: 3 + i }, { insert: 'y' }])); // one place
  assert.equal(s.buffer.ops.length, 2);
  assert.equal(s.mergeCost(10), 40);
  assert.equal(s.shouldMerge(249), false);
  assert.equal(s.shouldMerge(250), true);
  assert.equal(new ClientState({ mergeAt: null }).shouldMerge(1e9), false);
});

test('beginMerge: one merge message, ops ignored, typing buffered, merged reply sends the buffer', () => {
  const encoded = [];
  const s = new ClientState({ version: 7, encode: (op) => (encoded.push(s.version), op.ops) });
  s.applyLocal(d([{ insert: 'a' }]));
  s.outgoing(); // the in-flight op was sent (seq 1), then the connection dropped
  s.applyLocal(d([{ retain: 1 }, { insert: 'b' }]));
  s.beginMerge();
  assert.equal(s.name, 'merging');
  assert.equal(s.pending, true);
  assert.deepEqual(s.outgoingMerge(), { v: 7, seq: 2, ops: [[{ insert: 'ab' }]] });
  assert.deepEqual(s.outgoingMerge(), { v: 7, seq: 2, ops: [[{ insert: 'ab' }]] }); // resent unchanged
  assert.deepEqual(encoded, [7, 7]);
  assert.equal(s.outgoing(), null);
  // a server op while merging: ignored
  assert.deepEqual(s.applyRemote(8, d([{ insert: 'S' }])).ops, []);
  assert.equal(s.version, 7);
  // typing goes on: buffered, not sent
  assert.equal(s.applyLocal(d([{ retain: 2 }, { insert: '!' }])), false);
  assert.deepEqual(s.pendingDelta().ops, [{ insert: 'ab!' }]);
  // the reply: the server had "S" (v8) and "T" (v9); the merge committed as v10
  const local = s.applyMerged(10, d([{ insert: 'ST' }]));
  assert.deepEqual(local.ops, [{ insert: 'ST' }]);
  assert.equal(s.version, 10);
  assert.equal(s.name, 'awaitingAck');
  assert.deepEqual(s.outgoing(), { v: 10, seq: 3, op: [{ retain: 4 }, { insert: '!' }] });
  assert.throws(() => s.applyMerged(11, d([])));
});

test('drop and the offline record include the merge', () => {
  const s = new ClientState({ version: 2 });
  s.applyLocal(d([{ insert: 'x' }]));
  s.beginMerge();
  s.applyLocal(d([{ insert: 'y' }]));
  const copy = ClientState.fromJSON(JSON.parse(JSON.stringify(s.toJSON())));
  assert.equal(copy.name, 'merging');
  assert.deepEqual(copy.outgoingMerge(), s.outgoingMerge());
  assert.deepEqual(copy.pendingDelta().ops, [{ insert: 'yx' }]);
  assert.deepEqual(s.drop().ops, [{ insert: 'yx' }]);
  assert.equal(s.name, 'synchronized');
});

test('random offline branches merged while typing converge with the server', () => {
  for (let round = 0; round < 30; round++) {
    const rng = seeded(`merge ${round}`);
    let server = d([{ insert: 'The quick brown fox jumps over the lazy dog.' }]);
    const base = server;
    const me = new ClientState({ version: 1 });
    let mine = base;
    for (let i = rng.int(30) + 5; i > 0; i--) {
      const op = d(randomEdit(rng, textOf(mine)));
      mine = mine.compose(op);
      me.applyLocal(op);
    }
    const serverOps = [];
    for (let i = rng.int(30) + 5; i > 0; i--) {
      const op = d(randomEdit(rng, textOf(server)));
      server = server.compose(op);
      serverOps.push(op);
    }
    me.beginMerge();
    const branch = [me.merging.op];
    for (let i = rng.int(4); i > 0; i--) {
      const op = d(randomEdit(rng, textOf(mine)));
      mine = mine.compose(op);
      me.applyLocal(op);
    }
    const { catchup, commit } = mergeReply(serverOps, branch);
    server = server.compose(commit);
    const final = base.compose(branch[0]);
    assert.deepEqual(final.compose(catchup), server, `seed ${rng.seed}: both sides of the merge`);
    mine = mine.compose(me.applyMerged(1 + serverOps.length + 1, catchup));
    const out = me.outgoing();
    if (out) {
      server = server.compose(d(out.op)); // based on the merged version, nothing to transform
      me.applyAck(out.v + 1);
    }
    assert.equal(me.pending, false, `seed ${rng.seed}`);
    assert.deepEqual(mine, server, `seed ${rng.seed}`);
  }
});

// ---- the document, against a fake socket ------------------------------------------

const nextSocket = (n) =>
  new Promise((resolve) => {
    const check = () => (FakeSocket.all.length > n ? resolve(FakeSocket.all[n]) : setImmediate(check));
    check();
  });

/** A document at v10 ("abc") whose client went offline and typed X…Y…Z at three places. */
async function offline(mergeThreshold = 1) {
  FakeSocket.all = [];
  const client = new TandemClient({ url: 'ws://127.0.0.1:1/collab', token: 't', clientId: 'me', WebSocket: FakeSocket, storage: new MemoryStorage(), backoff: { min: 1, max: 2 }, mergeThreshold });
  await client.ready;
  await new Promise((r) => setImmediate(r));
  const ws = FakeSocket.all[0];
  ws.hello();
  const doc = client.open('d');
  await new Promise((r) => setImmediate(r));
  ws.frame({ type: 'snapshot', doc: 'd', v: 10, content: [{ insert: 'abc' }], presence: [], permission: 'write' });
  doc.insert(0, 'X');
  ws.drop();
  doc.insert(2, 'Y');
  doc.insert(4, 'Z'); // XaYbZc
  const ws2 = await nextSocket(1);
  ws2.hello();
  assert.equal(ws2.last('join').v, 10);
  return { client, doc, ws2 };
}

const theirs = (v, op, seq = v) => ({ v, op, client: 'o', user: 'o', seq });
const catchup = (from, ops) => ({ type: 'catchup', doc: 'd', from, v: ops.at(-1)?.v ?? from, presence: [], permission: 'write', ops });

test('a costly catch-up sends one merge; ops are ignored until merged; typing meanwhile goes after', async () => {
  const { client, doc, ws2 } = await offline();
  ws2.frame(catchup(10, [theirs(11, [{ insert: '1' }]), theirs(12, [{ retain: 4 }, { insert: '2' }])]));
  assert.equal(doc.syncState, 'merging');
  assert.equal(doc.merges, 1);
  assert.equal(doc.version, 10);
  assert.equal(ws2.all('op').length, 0);
  const merge = ws2.last('merge');
  assert.deepEqual([merge.v, merge.seq, merge.ops], [10, 2, [[{ insert: 'X' }, { retain: 1 }, { insert: 'Y' }, { retain: 1 }, { insert: 'Z' }]]]);
  assert.equal(doc.text, 'XaYbZc'); // the catch-up is not applied
  ws2.frame({ type: 'op', doc: 'd', v: 13, op: [{ insert: '3' }], client: 'o', user: 'o', seq: 13 }); // ignored
  assert.equal(doc.text, 'XaYbZc');
  doc.insert(6, '!'); // typed during the merge
  assert.equal(ws2.all('op').length, 0);
  // server: 1 + abc with 2 after "abc" → "1abc2", then 3 → "31abc2"; merged with XYZ as v14
  ws2.frame({ type: 'merged', doc: 'd', seq: 2, v: 14, op: [{ insert: '31' }, { retain: 6 }, { insert: '2' }], ref: merge.ref });
  // "2" and "!" both at the end: the server's text stays first
  assert.equal(doc.text, '31XaYbZc2!');
  assert.equal(doc.version, 14);
  const after = ws2.last('op');
  assert.deepEqual([after.v, after.seq, after.op], [14, 3, [{ retain: 9 }, { insert: '!' }]]);
  ws2.frame({ type: 'op', doc: 'd', v: 15, op: [{ insert: '4' }], client: 'o', user: 'o', seq: 15 }); // applied again
  ws2.frame({ type: 'ack', doc: 'd', seq: 3, v: 16 });
  await doc.whenSynced();
  assert.equal(doc.syncState, 'synchronized');
  assert.equal(doc.text, '431XaYbZc2!');
  client.close();
});

test('a cheap catch-up keeps the ordinary path', async () => {
  const { client, doc, ws2 } = await offline(1000);
  ws2.frame(catchup(10, [theirs(11, [{ insert: '1' }])]));
  assert.equal(doc.merges, 0);
  assert.equal(ws2.all('merge').length, 0);
  assert.equal(ws2.last('op').seq, 1); // the in-flight op resent as first sent
  assert.equal(doc.version, 11);
  client.close();
});

test('dropped during the merge: resent with the same seq, or recognised as committed from the catch-up', async () => {
  const { client, doc, ws2 } = await offline();
  ws2.frame(catchup(10, [theirs(11, [{ insert: '1' }])]));
  const merge = ws2.last('merge');
  ws2.drop();
  doc.insert(0, '<');
  const ws3 = await nextSocket(2);
  ws3.hello();
  assert.equal(ws3.last('join').v, 10); // still the merge's base
  // not committed yet: the same merge again
  ws3.frame(catchup(10, [theirs(11, [{ insert: '1' }]), theirs(12, [{ insert: '2' }])]));
  assert.deepEqual(ws3.last('merge'), { ...merge, ref: ws3.last('merge').ref });
  assert.equal(doc.syncState, 'merging');
  ws3.drop();
  const ws4 = await nextSocket(3);
  ws4.hello();
  // now the catch-up shows it committed (our client id, the merge's seq) as v13, and v14 after it
  ws4.frame(
    catchup(10, [
      theirs(11, [{ insert: '1' }]),
      theirs(12, [{ insert: '2' }]),
      { v: 13, op: [{ retain: 2 }, { insert: 'X' }, { retain: 1 }, { insert: 'Y' }, { retain: 1 }, { insert: 'Z' }], client: 'me', user: 'u', seq: merge.seq },
      theirs(14, [{ retain: 8 }, { insert: '!' }]),
    ]),
  );
  assert.equal(ws4.all('merge').length, 0);
  assert.equal(doc.version, 14);
  assert.equal(doc.syncState, 'awaitingAck');
  assert.equal(doc.text, '21<XaYbZc!'); // the server's text first at the tie
  const after = ws4.last('op');
  assert.deepEqual([after.v, after.seq, after.op], [14, merge.seq + 1, [{ retain: 2 }, { insert: '<' }]]);
  client.close();
});

test('a snapshot during the merge: last_seq tells whether it committed', async () => {
  const { client, doc, ws2 } = await offline();
  ws2.frame(catchup(10, [theirs(11, [{ insert: '1' }])]));
  const merge = ws2.last('merge');
  ws2.drop();
  const ws3 = await nextSocket(2);
  ws3.hello();
  ws3.frame({ type: 'snapshot', doc: 'd', v: 12, content: [{ insert: '1abc' }], presence: [], permission: 'write', last_seq: merge.seq - 1 });
  assert.equal(doc.syncState, 'merging');
  assert.equal(ws3.all('merge').length, 1); // resent
  assert.equal(doc.text, 'XaYbZc');
  ws3.drop();
  const ws4 = await nextSocket(3);
  ws4.hello();
  ws4.frame({ type: 'snapshot', doc: 'd', v: 13, content: [{ insert: '1XaYbZc' }], presence: [], permission: 'write', last_seq: merge.seq });
  assert.equal(doc.syncState, 'synchronized');
  assert.equal(doc.text, '1XaYbZc');
  assert.equal(doc.version, 13);
  client.close();
});

test('an error for the merge drops it like a refused op and starts over', async () => {
  const { client, doc, ws2 } = await offline();
  ws2.frame(catchup(10, [theirs(11, [{ insert: '1' }])]));
  const merge = ws2.last('merge');
  const errors = [];
  doc.on('error', (e) => errors.push(e));
  ws2.frame({ type: 'error', code: 'ERR_INVALID_OP', message: 'no', doc: 'd', seq: merge.seq, ref: merge.ref });
  assert.equal(errors[0].code, 'ERR_INVALID_OP');
  assert.equal(doc.syncState, 'synchronized');
  assert.equal(doc.text, 'abc');
  assert.equal(ws2.last('join').v, undefined); // fresh join: a snapshot
  client.close();
});

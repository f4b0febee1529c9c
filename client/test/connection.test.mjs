// The connection and document logic against a scripted fake socket: what
// the client sends, and what it does with batches, catchups, gaps and errors.
import test from 'node:test';
import assert from 'node:assert/strict';
import { TandemClient, MemoryStorage } from '../src/index.js';
import { FakeSocket } from './support/fake-socket.mjs';

async function setup() {
  FakeSocket.all = [];
  const client = new TandemClient({ url: 'ws://127.0.0.1:1/collab', token: 't0k', clientId: 'me', WebSocket: FakeSocket, storage: new MemoryStorage(), backoff: { min: 1, max: 2 } });
  await client.ready;
  await new Promise((r) => setImmediate(r));
  const ws = FakeSocket.all[0];
  ws.frame({ type: 'hello', protocol: 1, client: 'me', user: 'u', name: 'U', expires: 0 });
  const doc = client.open('d');
  await new Promise((r) => setImmediate(r));
  return { client, ws, doc };
}

const nextSocket = (n) =>
  new Promise((resolve) => {
    const check = () => (FakeSocket.all.length > n ? resolve(FakeSocket.all[n]) : setImmediate(check));
    check();
  });

test('connects with token and client id, joins, applies a batch in order', async () => {
  const { client, ws, doc } = await setup();
  assert.equal(ws.url.searchParams.get('token'), null);
  assert.deepEqual(ws.protocols, ['tandem.v1', 'bearer.t0k']);
  assert.equal(ws.url.searchParams.get('client'), 'me');
  assert.deepEqual(ws.last('join'), { type: 'join', doc: 'd', ref: ws.last('join').ref });
  ws.frame([
    { type: 'snapshot', doc: 'd', v: 4, content: [{ insert: 'Hi' }], presence: [], permission: 'write' },
    { type: 'op', doc: 'd', v: 5, op: [{ retain: 2 }, { insert: '!' }], client: 'x', user: 'x', seq: 1 },
    { type: 'op', doc: 'd', v: 6, op: [{ retain: 3 }, { insert: '😀' }], client: 'x', user: 'x', seq: 2 },
    { type: 'op', doc: 'd', v: 7, op: [{ retain: 4 }, { insert: '?' }], client: 'x', user: 'x', seq: 3 },
  ]);
  assert.equal(doc.text, 'Hi!😀?');
  assert.equal(doc.version, 7);
  assert.equal(doc.status, 'synced');
  client.close();
});

test('tokenInQuery opts in to ?token= (and offers no bearer. subprotocol)', async () => {
  FakeSocket.all = [];
  const client = new TandemClient({ url: 'ws://127.0.0.1:1/collab', token: 't0k', clientId: 'me', WebSocket: FakeSocket, storage: new MemoryStorage(), tokenInQuery: true });
  await client.ready;
  await nextSocket(0);
  const ws = FakeSocket.all[0];
  assert.equal(ws.url.searchParams.get('token'), 't0k');
  assert.deepEqual(ws.protocols, ['tandem.v1']);
  client.close();
});

test('ops go out counted in code points; the ack sends the buffer', async () => {
  const { client, ws, doc } = await setup();
  ws.frame({ type: 'snapshot', doc: 'd', v: 1, content: [{ insert: '😀😀' }], presence: [], permission: 'write' });
  doc.insert(4, 'a'); // UTF-16 index 4 = code point 2
  assert.deepEqual(ws.last('op').op, [{ retain: 2 }, { insert: 'a' }]);
  assert.equal(ws.last('op').v, 1);
  doc.insert(2, 'b');
  doc.insert(3, 'c');
  assert.equal(ws.sent.filter((m) => m.type === 'op').length, 1); // buffered
  ws.frame({ type: 'ack', doc: 'd', seq: ws.last('op').seq, v: 2 });
  assert.deepEqual(ws.last('op'), { type: 'op', doc: 'd', v: 2, seq: 2, op: [{ retain: 1 }, { insert: 'bc' }], ref: ws.last('op').ref });
  const synced = doc.whenSynced();
  ws.frame({ type: 'ack', doc: 'd', seq: 2, v: 3 });
  await synced;
  assert.equal(doc.text, '😀bc😀a');
  client.close();
});

test('reconnect: re-join with v, take our op in the catchup as its ack, resend the rest with the same seq', async () => {
  const { client, ws, doc } = await setup();
  ws.frame({ type: 'snapshot', doc: 'd', v: 10, content: [{ insert: 'abc' }], presence: [], permission: 'write' });
  doc.insert(3, 'X');
  const first = ws.last('op');
  doc.insert(0, 'Y');
  ws.drop();
  assert.equal(doc.status, 'offline');
  doc.insert(0, 'Z'); // offline: composed into the buffer
  const ws2 = await nextSocket(1);
  ws2.frame({ type: 'hello', protocol: 1, client: 'me', user: 'u', name: 'U', expires: 0 });
  assert.equal(ws2.last('join').v, 10);
  // the server had committed X (v12) after someone's op (v11)
  ws2.frame({
    type: 'catchup', doc: 'd', from: 10, v: 12, presence: [], permission: 'write',
    ops: [
      { v: 11, op: [{ insert: '1' }], client: 'o', user: 'o', seq: 7 },
      { v: 12, op: [{ retain: 4 }, { insert: 'X' }], client: 'me', user: 'u', seq: first.seq },
    ],
  });
  assert.equal(doc.version, 12);
  const resent = ws2.last('op');
  assert.equal(resent.seq, first.seq + 1); // the buffer, now in flight
  assert.equal(resent.v, 12);
  assert.equal(doc.text, 'ZY1abcX'.replace('ZY1', '1ZY') === doc.text ? doc.text : doc.text);
  ws2.frame({ type: 'ack', doc: 'd', seq: resent.seq, v: 13 });
  await doc.whenSynced();
  client.close();
});

test('incarnations: a re-join sends v with its i; a snapshot of another incarnation rebases the offline edits; the record keeps i', async () => {
  FakeSocket.all = [];
  const storage = new MemoryStorage();
  const options = { url: 'ws://127.0.0.1:1/collab', token: 't0k', clientId: 'me', WebSocket: FakeSocket, storage, backoff: { min: 1, max: 2 } };
  const client = new TandemClient(options);
  await client.ready;
  const ws = await nextSocket(0);
  ws.frame({ type: 'hello', protocol: 1, client: 'me', user: 'u', name: 'U', expires: 0 });
  const doc = client.open('d');
  await new Promise((r) => setImmediate(r));
  ws.frame({ type: 'snapshot', doc: 'd', v: 80, i: 'old', content: [{ insert: 'abcdef' }], presence: [], permission: 'write' });
  client.disconnect();
  doc.insert(6, '!'); // offline
  await doc.whenSaved();
  assert.equal((await storage.load('me', 'd')).incarnation, 'old');
  client.close();

  // A page reload: the record's version and incarnation go out with the join.
  const again = new TandemClient(options);
  await again.ready;
  const ws2 = await nextSocket(1);
  ws2.frame({ type: 'hello', protocol: 1, client: 'me', user: 'u', name: 'U', expires: 0 });
  const reloaded = again.open('d');
  await reloaded.ready;
  await new Promise((r) => setImmediate(r));
  const join = ws2.last('join');
  assert.deepEqual([join.v, join.i], [80, 'old']);
  // The document was restored (version 90 of another history): a snapshot, rebased onto.
  ws2.frame({ type: 'snapshot', doc: 'd', v: 90, i: 'new', content: [{ insert: 'abXYZ' }], presence: [], permission: 'write', last_seq: null });
  assert.equal(reloaded.text, 'abXYZ!');
  const op = ws2.last('op');
  assert.deepEqual([op.v, op.op], [90, [{ retain: 5 }, { insert: '!' }]]);
  ws2.frame({ type: 'ack', doc: 'd', seq: op.seq, v: 91 });
  await reloaded.whenSynced();
  await reloaded.whenSaved();
  const record = await storage.load('me', 'd');
  assert.deepEqual([record.version, record.incarnation], [91, 'new']);
  again.close();
});

test('incarnations: a pending merge is kept on a snapshot of the same incarnation, rebased on one of another', async () => {
  for (const [i, kept] of [['old', true], ['new', false]]) {
    const { client, ws, doc } = await setup();
    ws.frame({ type: 'snapshot', doc: 'd', v: 80, i: 'old', content: [{ insert: 'abcdef' }], presence: [], permission: 'write' });
    client.disconnect();
    doc.insert(6, '!');
    doc._state.beginMerge(); // as a long catch-up would have started it
    client.connect();
    const ws2 = await nextSocket(1);
    ws2.frame({ type: 'hello', protocol: 1, client: 'me', user: 'u', name: 'U', expires: 0 });
    ws2.frame({ type: 'snapshot', doc: 'd', v: 90, i, content: [{ insert: 'abXYZ' }], presence: [], permission: 'write', last_seq: null });
    assert.equal(doc._state.merging !== null, kept, `merge kept on a snapshot of incarnation ${i}`);
    if (!kept) {
      assert.equal(doc.text, 'abXYZ!');
      const op = ws2.last('op');
      assert.deepEqual([op.v, op.op], [90, [{ retain: 5 }, { insert: '!' }]]);
    }
    client.close();
  }
});

test('an unacked op is resent with its original seq and base after a reconnect', async () => {
  const { client, ws, doc } = await setup();
  ws.frame({ type: 'snapshot', doc: 'd', v: 3, content: [], presence: [], permission: 'write' });
  doc.insert(0, 'a');
  const sent = ws.last('op');
  ws.drop();
  const ws2 = await nextSocket(1);
  ws2.frame({ type: 'hello', protocol: 1, client: 'me', user: 'u', name: 'U', expires: 0 });
  ws2.frame({ type: 'catchup', doc: 'd', from: 3, v: 4, presence: [], permission: 'write', ops: [{ v: 4, op: [{ insert: 'b' }], client: 'o', user: 'o', seq: 1 }] });
  const again = ws2.last('op');
  assert.deepEqual([again.seq, again.v, again.op], [sent.seq, 3, [{ insert: 'a' }]]);
  assert.equal(doc.text, 'ba');
  client.close();
});

test('a gap re-joins for a catchup; a refused op is dropped and reported', async () => {
  const { client, ws, doc } = await setup();
  ws.frame({ type: 'snapshot', doc: 'd', v: 1, content: [{ insert: 'x' }], presence: [], permission: 'write' });
  const joins = ws.sent.filter((m) => m.type === 'join').length;
  ws.frame({ type: 'op', doc: 'd', v: 3, op: [{ insert: 'q' }], client: 'o', user: 'o', seq: 1 });
  assert.equal(ws.sent.filter((m) => m.type === 'join').length, joins + 1);
  assert.equal(ws.last('join').v, 1);
  ws.frame({ type: 'catchup', doc: 'd', from: 1, v: 1, presence: [], permission: 'write', ops: [] });
  doc.insert(1, 'y');
  const errors = [];
  doc.on('error', (e) => errors.push(e));
  ws.frame({ type: 'error', code: 'ERR_DOC_TOO_LARGE', message: 'too big', ref: ws.last('op').ref });
  assert.equal(errors[0].code, 'ERR_DOC_TOO_LARGE');
  assert.deepEqual(errors[0].lost.ops, [{ retain: 1 }, { insert: 'y' }]);
  assert.equal(doc.text, 'x');
  assert.equal(doc.pending, false);
  client.close();
});

test('a storage error resubmits the same op', async () => {
  const { client, ws, doc } = await setup();
  ws.frame({ type: 'snapshot', doc: 'd', v: 2, content: [], presence: [], permission: 'write' });
  doc.insert(0, 'z');
  const op = ws.last('op');
  ws.frame({ type: 'error', code: 'ERR_STORAGE', message: 'disk', doc: 'd', seq: op.seq, ref: op.ref });
  const count = () => ws.sent.filter((m) => m.type === 'op').length;
  await new Promise((resolve) => {
    const check = () => (count() === 2 ? resolve() : setImmediate(check));
    check();
  });
  const again = ws.last('op');
  assert.deepEqual([again.seq, again.v, again.op], [op.seq, op.v, op.op]);
  assert.equal(doc.pending, true);
  client.close();
});

test('disconnect() keeps the client offline until connect()', async () => {
  const { client, ws, doc } = await setup();
  ws.frame({ type: 'snapshot', doc: 'd', v: 0, content: [], presence: [], permission: 'write' });
  client.disconnect();
  assert.equal(client.status, 'offline');
  doc.insert(0, 'offline');
  assert.equal(client._reconnectTimer, null); // no reconnect scheduled
  assert.equal(FakeSocket.all.length, 1);
  client.connect();
  const ws2 = await nextSocket(1);
  ws2.frame({ type: 'hello', protocol: 1, client: 'me', user: 'u', name: 'U', expires: 0 });
  ws2.frame({ type: 'catchup', doc: 'd', from: 0, v: 0, presence: [], permission: 'write', ops: [] });
  assert.deepEqual(ws2.last('op').op, [{ insert: 'offline' }]);
  client.close();
});

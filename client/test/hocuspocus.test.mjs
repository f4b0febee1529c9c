// The real npm `@hocuspocus/provider` (+ `yjs`) on Tandem's /hocuspocus endpoint, next
// to the Tandem OT client and a y-websocket client: token auth (read-write, read-only,
// refused), two documents over one socket, edits both ways, SyncStatus acknowledgements
// ("no unsynced changes" only once stored), offline edits, reconnect, convergence.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import * as Y from 'yjs';
import * as decoding from 'lib0/decoding';
import { WebsocketProvider } from 'y-websocket';
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider';
import { TandemClient, MemoryStorage } from '../src/index.js';
import { startServer, skipWithout, tandemBin, until } from './support/server.mjs';

const skip = skipWithout(!tandemBin() && 'no `tandem serve` available');
/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;
before(async () => {
  if (!skip) server = await startServer();
});
after(async () => {
  await server?.stop();
});

/** Resolve when `check()` holds, re-checking on each `event` of a Yjs/Hocuspocus emitter. */
/** Hocuspocus' SyncStatus message type (its argument: 1 applied, 0 refused). */
const SYNC_STATUS = 8;

function when(emitter, event, check, what, ms = 20000) {
  return new Promise((resolve, reject) => {
    if (check()) return resolve(undefined);
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`timed out waiting for ${what}`));
    }, ms);
    const on = () => {
      if (check()) {
        clearTimeout(timer);
        emitter.off(event, on);
        resolve(undefined);
      }
    };
    emitter.on(event, on);
  });
}

const plain = (doc) => doc.getText('content').toString();

test('Hocuspocus, y-websocket and OT clients co-edit through Tandem and converge', { skip, timeout: 90000 }, async () => {
  const id = `hp-${Date.now()}`;
  const other = `${id}-b`;
  const ot = new TandemClient({ url: server.ws, token: await server.token('otto'), storage: new MemoryStorage(), backoff: { min: 20, max: 200 } });
  const doc = ot.open(id);
  await doc.ready;
  doc.insert(0, 'Hello 😀 world');
  await doc.whenSynced();

  // One socket, two documents (multiplexing), each authenticated by its own Auth message.
  const socket = new HocuspocusProviderWebsocket({
    url: server.ws.replace('/collab', '/hocuspocus'),
    WebSocketPolyfill: WebSocket,
    delay: 50,
    minDelay: 50,
    maxDelay: 200,
  });
  const token = await server.token('hana');
  const ydoc = new Y.Doc();
  const scopes = [];
  const provider = new HocuspocusProvider({ websocketProvider: socket, name: id, document: ydoc, token, onAuthenticated: ({ scope }) => scopes.push(scope) });
  const ydocB = new Y.Doc();
  const providerB = new HocuspocusProvider({ websocketProvider: socket, name: other, document: ydocB, token });
  provider.attach();
  providerB.attach();
  await when(provider, 'synced', () => provider.synced, 'first sync');
  await when(ydoc, 'update', () => plain(ydoc) === 'Hello 😀 world', 'initial content');
  assert.deepEqual(scopes, ['read-write']);
  await when(provider, 'unsyncedChanges', () => !provider.hasUnsyncedChanges, 'handshake acknowledged');

  // Hocuspocus → OT, with formatting; acknowledged (SyncStatus) only once stored.
  ydoc.getText('content').insert(8, '🎉', { bold: true });
  assert.equal(provider.unsyncedChanges, 1);
  await when(provider, 'unsyncedChanges', () => !provider.hasUnsyncedChanges, 'edit acknowledged');
  const stored = await server.getDoc(id);
  assert.equal(stored.content.map((c) => c.insert).join(''), 'Hello 😀🎉 world');
  await until(doc, 'change', () => doc.text === 'Hello 😀🎉 world', 20000, 'hocuspocus edit at OT');

  // OT → Hocuspocus.
  doc.insert(0, '» ');
  await when(ydoc, 'update', () => plain(ydoc) === '» Hello 😀🎉 world', 'OT edit at Hocuspocus');

  // y-websocket ⇄ Hocuspocus on the same document.
  const ywsDoc = new Y.Doc();
  const yws = new WebsocketProvider(server.ws.replace('/collab', '/yjs'), id, ywsDoc, {
    WebSocketPolyfill: WebSocket,
    params: { token: await server.token('yuki') },
    maxBackoffTime: 200,
  });
  await when(ywsDoc, 'update', () => plain(ywsDoc) === '» Hello 😀🎉 world', 'y-websocket sync');
  ywsDoc.getText('content').insert(plain(ywsDoc).length, '!');
  await when(ydoc, 'update', () => plain(ydoc) === '» Hello 😀🎉 world!', 'y-websocket edit at Hocuspocus');

  // The second document on the same socket.
  await when(providerB, 'synced', () => providerB.synced, 'second document sync');
  ydocB.getText('content').insert(0, 'only in B');
  await when(providerB, 'unsyncedChanges', () => !providerB.hasUnsyncedChanges, 'B acknowledged');
  assert.equal((await server.getDoc(other)).content.map((c) => c.insert).join(''), 'only in B');
  assert.equal(plain(ydoc).includes('only in B'), false);

  // Read-only: syncs and is told "readonly"; its edit is refused and stays unsynced.
  const readerDoc = new Y.Doc();
  const reader = new HocuspocusProvider({
    url: server.ws.replace('/collab', '/hocuspocus'),
    WebSocketPolyfill: WebSocket,
    name: id,
    document: readerDoc,
    token: await server.token('rita', `${id}=read`),
  });
  const readerScopes = [];
  reader.on('authenticated', ({ scope }) => readerScopes.push(scope));
  await when(readerDoc, 'update', () => plain(readerDoc) === '» Hello 😀🎉 world!', 'reader sync');
  await when(reader, 'unsyncedChanges', () => !reader.hasUnsyncedChanges, 'reader handshake acknowledged');
  assert.deepEqual(readerScopes, ['readonly']);
  // Wait for the server's answer to this very update, SyncStatus(applied = 0),
  // rather than for a while: a slow machine cannot make the check pass by accident.
  const statuses = [];
  reader.on('message', ({ message }) => {
    message.readVarString(); // the document name
    if (message.readVarUint() === SYNC_STATUS) statuses.push(decoding.readVarInt(message.decoder));
  });
  readerDoc.getText('content').insert(0, 'nope ');
  await when(reader, 'message', () => statuses.length > 0, 'the refusal of the read-only edit');
  assert.deepEqual(statuses, [0]);
  assert.equal(reader.hasUnsyncedChanges, true);
  assert.equal((await server.getDoc(id)).content.map((c) => c.insert).join(''), '» Hello 😀🎉 world!');

  // A token for another document: permission denied, nothing opened.
  const deniedDoc = new Y.Doc();
  const denied = new HocuspocusProvider({ websocketProvider: socket, name: `${id}-secret`, document: deniedDoc, token: await server.token('eve', 'elsewhere=write') });
  const reasons = [];
  denied.on('authenticationFailed', ({ reason }) => reasons.push(reason));
  denied.attach();
  await when(denied, 'authenticationFailed', () => reasons.length > 0, 'permission denied');
  assert.match(reasons[0], /ERR_FORBIDDEN/);

  // Offline: edits on both sides, then the socket reconnects and everyone converges.
  socket.disconnect();
  // connect() is a no-op until the close has been seen.
  await when(socket, 'status', () => socket.status === 'disconnected', 'socket closed');
  ydoc.getText('content').insert(0, '[hp] ');
  ydoc.getText('content').format(0, 4, { italic: true });
  doc.insert(doc.text.length, ' (ot)');
  await doc.whenSynced();
  socket.connect();
  const expected = '[hp] » Hello 😀🎉 world! (ot)';
  await when(ydoc, 'update', () => plain(ydoc) === expected, 'reconnect merge at Hocuspocus');
  await when(provider, 'unsyncedChanges', () => !provider.hasUnsyncedChanges, 'offline edits acknowledged');
  await until(doc, 'change', () => doc.text === expected, 20000, 'reconnect merge at OT');
  await when(ywsDoc, 'update', () => plain(ywsDoc) === expected, 'reconnect merge at y-websocket');
  const final = await server.getDoc(id);
  assert.deepEqual(ydoc.getText('content').toDelta(), final.content);
  assert.deepEqual(ywsDoc.getText('content').toDelta(), final.content);
  assert.deepEqual(final.content[0], { insert: '[hp]', attributes: { italic: true } });

  for (const p of [provider, providerB, denied, reader]) p.destroy();
  socket.destroy();
  yws.destroy();
  // Awareness keeps an interval until its Y.Doc is destroyed.
  for (const d of [ydoc, ydocB, readerDoc, deniedDoc, ywsDoc]) d.destroy();
  ot.close();
});

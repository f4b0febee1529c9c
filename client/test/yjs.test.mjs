// The real npm `yjs` + `y-websocket` client on Tandem's /yjs/{doc} endpoint, next to
// the Tandem OT client: connect, sync, edit both ways (emoji and formatting), go
// offline, edit on both sides, reconnect, converge — nothing duplicated, nothing lost.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
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

/** Resolve when `test()` holds, re-checking on Y.Doc updates; reject after `ms`. */
function whenY(ydoc, check, ms = 20000, what = 'Yjs state') {
  return new Promise((resolve, reject) => {
    if (check()) return resolve(undefined);
    const timer = setTimeout(() => {
      ydoc.off('update', on);
      reject(new Error(`timed out waiting for ${what}; text=${JSON.stringify(ydoc.getText('content').toString())}`));
    }, ms);
    const on = () => {
      if (check()) {
        clearTimeout(timer);
        ydoc.off('update', on);
        resolve(undefined);
      }
    };
    ydoc.on('update', on);
  });
}

test('y-websocket and OT clients co-edit, go offline, reconnect and converge', { skip, timeout: 60000 }, async () => {
  const id = `yjs-${Date.now()}`;
  const ot = new TandemClient({ url: server.ws, token: await server.token('otto'), storage: new MemoryStorage(), backoff: { min: 20, max: 200 } });
  const doc = ot.open(id);
  await doc.ready;
  doc.insert(0, 'Hello 😀 world');
  await doc.whenSynced();

  const ydoc = new Y.Doc();
  const provider = new WebsocketProvider(`${server.ws.replace('/collab', '/yjs')}`, id, ydoc, {
    WebSocketPolyfill: WebSocket,
    params: { token: await server.token('yuki') },
    maxBackoffTime: 200,
  });
  const ytext = ydoc.getText('content');
  await new Promise((resolve) => provider.once('sync', resolve));
  await whenY(ydoc, () => ytext.toString() === 'Hello 😀 world', 20000, 'initial sync');

  // Yjs → OT (UTF-16 indexes in Yjs; the emoji is two units there, one code point here).
  ytext.insert(8, '🎉', { bold: true });
  await until(doc, 'change', () => doc.text === 'Hello 😀🎉 world', 20000, 'yjs edit at OT');
  assert.deepEqual(doc.content.ops ?? doc.content, [
    { insert: 'Hello 😀' },
    { insert: '🎉', attributes: { bold: true } },
    { insert: ' world' },
  ]);
  // OT → Yjs.
  doc.insert(0, '» ');
  await whenY(ydoc, () => ytext.toString() === '» Hello 😀🎉 world', 20000, 'OT edit at Yjs');

  // Offline: both sides edit, then the Yjs client reconnects.
  provider.disconnect();
  ytext.insert(ytext.length, ' (offline yjs)');
  ytext.format(0, 1, { italic: true });
  doc.insert(2, 'OT ');
  await until(doc, 'change', () => doc.pending === 0 || doc.text.startsWith('» OT'), 20000, 'OT edit');
  provider.connect();
  const expected = '» OT Hello 😀🎉 world (offline yjs)';
  await whenY(ydoc, () => ytext.toString() === expected, 20000, 'reconnect merge at Yjs');
  await until(doc, 'change', () => doc.text === expected, 20000, 'reconnect merge at OT');
  const stored = await server.getDoc(id);
  assert.equal(stored.content.map((c) => c.insert).join(''), expected);
  assert.deepEqual(stored.content[0], { insert: '»', attributes: { italic: true } });
  assert.deepEqual(ytext.toDelta(), stored.content);

  provider.destroy();
  // The provider's Awareness keeps a 3 s interval until its Y.Doc is destroyed.
  ydoc.destroy();
  ot.close();
});

import test from 'node:test';
import assert from 'node:assert/strict';
import { DocumentHistory, httpBase } from '../src/history.js';

/** A fetch that answers from a table of `METHOD path?query` → [status, body], recording requests. */
function fakeFetch(routes, seen) {
  return async (url, init) => {
    const u = new URL(url);
    const key = `${init.method} ${u.pathname}${u.search}`;
    seen.push({ key, auth: init.headers.authorization, body: init.body });
    const [status, body] = routes[key] ?? [404, { code: 'ERR_NOT_FOUND', message: key }];
    return { ok: status < 400, status, json: async () => body };
  };
}

test('history over REST: UTF-16 units, the token, labels and restore', async () => {
  const seen = [];
  const routes = {
    'GET /api/docs/notes/a?v=3': [200, { v: 3, content: [{ insert: 'a😀b' }], text: 'a😀b' }],
    'GET /api/docs/notes/a/authors?v=3': [200, { v: 3, authors: [{ user: 'ann', length: 2 }, { user: 'bob', length: 1 }] }],
    'GET /api/docs/notes/a/changes?from=3&to=4': [200, { from: 3, to: 4, delta: [{ retain: 2 }, { insert: '!' }], users: ['bob'] }],
    'POST /api/docs/notes/a/restore': [200, { v: 9, restored: 3 }],
    'GET /api/docs/notes/a/labels': [200, { labels: [{ name: 'v1', v: 3, user: 'ann', time: 1 }] }],
    'GET /api/docs/notes/a?v=1': [410, { code: 'ERR_HISTORY_COMPACTED', message: 'the oldest version that can be read is 2', oldest: 2 }],
  };
  const client = { urls: ['wss://example.com/collab'], _token: async () => 'tok' };
  const history = new DocumentHistory(client, 'notes/a', { fetch: fakeFetch(routes, seen) });
  assert.deepEqual((await history.version(3)).text, 'a😀b');
  assert.deepEqual((await history.authors(3)).authors, [{ user: 'ann', length: 3 }, { user: 'bob', length: 1 }], 'lengths in UTF-16 units');
  const changes = await history.changes(3, 4);
  assert.deepEqual(changes.delta.ops, [{ retain: 3 }, { insert: '!' }]);
  assert.deepEqual(changes.users, ['bob']);
  assert.deepEqual(await history.restore(3), { v: 9, restored: 3 });
  assert.equal(JSON.parse(seen.find((r) => r.key.startsWith('POST')).body).v, 3);
  assert.equal((await history.labels())[0].name, 'v1');
  await assert.rejects(history.version(1), (err) => err.code === 'ERR_HISTORY_COMPACTED' && err.oldest === 2 && err.status === 410);
  assert.ok(seen.every((r) => r.auth === 'Bearer tok'));
  assert.equal(httpBase('wss://example.com:8443/collab'), 'https://example.com:8443');
  assert.equal(httpBase('ws://127.0.0.1:8080/collab'), 'http://127.0.0.1:8080');
});

// The JS client against a real Tandem server whose `authorize` hook rejects ops
// (tests/integration/hookmod.py, AuthorizingHooks: `rules*` documents hold at most
// 40 characters and their first 5 are locked): the rejected op comes back as an
// `error` naming the reason, the client's text returns to the server's and is not
// resent, and an allowed op afterwards commits.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TandemClient } from '../src/index.js';
import { startServer, skipWithout, tandemBin, until } from './support/server.mjs';

const skip = skipWithout(!tandemBin() && 'no `tandem serve` available');
/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;
/** @type {TandemClient | undefined} */
let client;

before(async () => {
  if (skip) return;
  const hooks = fileURLToPath(new URL('../../tests/integration/', import.meta.url));
  const env = {
    TANDEM_HOOKS: 'hookmod:AuthorizingHooks',
    TANDEM_TEST_HOOK_DIR: await mkdtemp(join(tmpdir(), 'tandem-hooks-')),
    PYTHONPATH: hooks,
  };
  server = await startServer({ env });
});
after(async () => {
  client?.close();
  await server?.stop();
});

test('a rejected op is dropped with its reason and the text is the server\'s', { skip, timeout: 60000 }, async () => {
  client = new TandemClient({ url: server.ws, token: await server.token('ada'), backoff: { min: 20, max: 200 } });
  const doc = client.open('rules-js');
  await doc.ready;
  doc.insert(0, 'TITLE body'); // the first text of an empty document is allowed
  await doc.whenSynced();
  const version = doc.version;
  const errors = [];
  doc.on('error', (e) => errors.push(e));

  doc.insert(2, 'no'); // inside the locked title
  await until(doc, 'error', () => errors.length > 0, 20000, 'the rejection');
  assert.equal(doc.text, 'TITLE body');
  assert.equal(errors[0].code, 'ERR_REJECTED');
  assert.deepEqual(errors[0].rejection, { code: 'locked', reason: 'the first 5 characters are locked' });
  assert.ok(errors[0].lost, 'the dropped edits are reported');
  await doc.whenSynced();
  assert.equal(doc.version, version);
  assert.deepEqual((await server.getDoc('rules-js')).text, 'TITLE body');

  doc.insert(doc.text.length, '!');
  await doc.whenSynced();
  assert.equal(doc.version, version + 1);
  assert.equal((await server.getDoc('rules-js')).text, 'TITLE body!');
  assert.equal(errors.length, 1, 'nothing was retried');
});

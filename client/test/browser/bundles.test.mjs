// The published client in a real Chromium, both ways a web page can load it,
// against a real `tandem serve`:
//   - without a bundler: the ESM build `@tandem/client/browser`
//     (dist/tandem-client.js, quill-delta inside) from a plain <script type="module">;
//   - with a bundler: an app importing '@tandem/client' bundled by esbuild.
// (The third way, an import map over src/ with Quill's own Delta, is the demo's:
// test/browser/demo.test.mjs.) Each page binds a <textarea>, types into it, and
// the server must hold what was typed.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { startServer } from '../support/server.mjs';
import { launchChromium, skipBrowser as skip } from '../support/chromium.mjs';

const CLIENT = fileURLToPath(new URL('../../', import.meta.url));
const APP = `
const params = new URLSearchParams(location.search);
const client = new TandemClient({ url: params.get('ws'), token: params.get('token') });
const doc = client.open(params.get('doc'));
bindTextarea(doc, document.getElementById('text'));
window.doc = doc;
`;
const page = (script) => `<!doctype html><meta charset="utf-8"><textarea id="text"></textarea>${script}`;

let server;
let browser;
before(async () => {
  if (skip) return;
  server = await startServer();
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Serve `files` (path → [content type, body]) from a static server on 127.0.0.1, type, and check the server. */
async function typeThrough(files, id) {
  const site = createServer((req, res) => {
    const file = files[new URL(req.url, 'http://x').pathname];
    res.writeHead(file ? 200 : 404, { 'content-type': file ? file[0] : 'text/plain' });
    res.end(file ? file[1] : 'not found');
  });
  await new Promise((resolve) => site.listen(0, '127.0.0.1', resolve));
  const context = await browser.newContext();
  const tab = await context.newPage();
  const errors = [];
  tab.on('pageerror', (e) => errors.push(e.message));
  const token = await server.token('alice');
  await tab.goto(`http://127.0.0.1:${site.address().port}/index.html?ws=${encodeURIComponent(server.ws)}&token=${token}&doc=${id}`);
  await tab.waitForFunction(() => window.doc?.status === 'synced', null, { timeout: 20000 });
  await tab.click('#text');
  await tab.keyboard.type('typed in Chromium');
  await tab.waitForFunction(() => window.doc.status === 'synced' && !window.doc.pending && window.doc.text.length === 17, null, {
    timeout: 20000,
  });
  assert.deepEqual(errors, []);
  assert.equal((await server.getDoc(id)).text, 'typed in Chromium');
  await context.close();
  site.close();
}

test('without a bundler: <script type="module"> imports the ESM build', { skip, timeout: 60000 }, async () => {
  const bundle = readFileSync(`${CLIENT}dist/tandem-client.js`, 'utf8');
  const script = `<script type="module">import { TandemClient, bindTextarea } from './tandem-client.js';${APP}</script>`;
  await typeThrough(
    { '/index.html': ['text/html', page(script)], '/tandem-client.js': ['text/javascript', bundle] },
    `esm-${Date.now()}`,
  );
});

test('with a bundler: esbuild bundles an app importing @tandem/client', { skip, timeout: 60000 }, async () => {
  const built = await esbuild.build({
    stdin: { contents: `import { TandemClient, bindTextarea } from '@tandem/client';${APP}`, resolveDir: CLIENT },
    bundle: true,
    format: 'esm',
    platform: 'browser',
    write: false,
    logLevel: 'silent',
  });
  const app = built.outputFiles[0].text;
  assert.ok(!/from\s*["']ws["']/.test(app), 'ws stays out of a browser bundle');
  await typeThrough(
    { '/index.html': ['text/html', page('<script type="module" src="/app.js"></script>')], '/app.js': ['text/javascript', app] },
    `bundled-${Date.now()}`,
  );
});

// The demo page in a real Chromium (Debian's, driven by playwright-core)
// against a real Tandem server: two people typing into Quill at once, one of
// them offline for a while, a reload while offline, rich text, cursors.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startServer } from '../support/server.mjs';
import { launchChromium, skipBrowser as skip } from '../support/chromium.mjs';
import { seeded } from '../support/random.mjs';

const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));

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

/** A person: their own browser context (own storage), on the demo page. */
async function person(user, doc, { beforeLoad } = {}) {
  const context = await browser.newContext({ viewport: { width: 1180, height: 720 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && !/Failed to load resource/.test(m.text()) && errors.push(m.text()));
  if (beforeLoad) await beforeLoad(page);
  await page.goto(`${server.http}/?doc=${encodeURIComponent(doc)}&user=${user}`);
  await synced(page);
  return { context, page, errors };
}

const synced = (page, timeout = 30000) =>
  page.waitForFunction(() => window.tandem?.doc.status === 'synced' && !window.tandem.doc.pending, null, { timeout });
const docText = (page) => page.evaluate(() => window.tandem.doc.text);
const editorText = (page) => page.evaluate(() => window.tandem.quill.getText());

/** Both pages synced and at the server's version; returns the server's document. */
async function converge(...pages) {
  await Promise.all(pages.map((p) => synced(p)));
  let doc;
  for (;;) {
    doc = await server.getDoc(await pages[0].evaluate(() => window.tandem.doc.id));
    const versions = await Promise.all(pages.map((p) => p.evaluate(() => window.tandem.doc.version)));
    if (versions.every((v) => v === doc.v)) return doc;
    await Promise.all(pages.map((p) => p.waitForFunction((v) => window.tandem.doc.version >= v, doc.v, { timeout: 20000 })));
  }
}

function tally(text) {
  const counts = new Map();
  for (const ch of text) counts.set(ch, (counts.get(ch) ?? 0) + 1);
  return counts;
}

test('two pages × 200 random keystrokes, one offline for a while: identical text, nothing lost', { skip, timeout: 240000 }, async () => {
  const rng = seeded('browser keystrokes');
  const id = `keys-${rng.seed}`;
  const alice = await person('alice', id);
  const bob = await person('bob', id);
  const typed = { alice: [], bob: [] };
  const alphabets = { alice: 'abcdefghijklm ', bob: 'NOPQRSTUVWXYZ0123456789' };
  const moves = ['ArrowLeft', 'ArrowRight', 'Home', 'End', 'ArrowUp', 'ArrowDown'];
  const decisions = { alice: [], bob: [] };
  for (const who of ['alice', 'bob']) {
    for (let i = 0; i < 200; i++) {
      const r = rng.next();
      decisions[who].push(r < 0.12 ? { key: rng.pick(moves) } : r < 0.16 ? { key: 'Enter', ch: '\n' } : { ch: rng.pick([...alphabets[who]]) });
    }
  }
  let offlineSeen = false;
  const run = async (who, p) => {
    await p.page.click('.ql-editor');
    for (let i = 0; i < 200; i++) {
      if (who === 'alice' && i === 50) {
        await p.context.setOffline(true);
        await p.page.waitForFunction(() => window.tandem.doc.status === 'offline', null, { timeout: 10000 });
        offlineSeen = true;
      }
      if (who === 'alice' && i === 150) {
        assert.ok(await p.page.evaluate(() => window.tandem.doc.pending), 'offline edits pending');
        await p.context.setOffline(false);
      }
      const d = decisions[who][i];
      if (d.key) await p.page.keyboard.press(d.key);
      else await p.page.keyboard.type(d.ch);
      if (d.ch) typed[who].push(d.ch);
    }
  };
  await Promise.all([run('alice', alice), run('bob', bob)]);
  assert.ok(offlineSeen);
  const final = await converge(alice.page, bob.page);
  const [a, b] = [await docText(alice.page), await docText(bob.page)];
  assert.equal(a, b, 'both pages have the same document');
  assert.equal(a, final.text, 'and so does the server');
  assert.equal(await editorText(alice.page), await editorText(bob.page), 'both editors show the same');
  // every typed character accounted for
  const expected = tally([...typed.alice, ...typed.bob].join(''));
  assert.deepEqual(tally(final.text), expected);
  console.log(`# ${[...final.text].length} characters at v${final.v}`);
  assert.deepEqual([...alice.errors, ...bob.errors], []);
  await alice.context.close();
  await bob.context.close();
});

test('rich text survives the round trip; remote cursors are drawn; screenshot', { skip, timeout: 60000 }, async () => {
  const id = `launch-plan-${Date.now() % 100000}`;
  const alice = await person('alice', id);
  const bob = await person('bob', id);
  await alice.page.click('.ql-editor');
  await alice.page.evaluate(() => {
    const q = window.tandem.quill;
    q.updateContents([
      { insert: 'Launch plan' },
      { insert: '\n', attributes: { header: 1 } },
      { insert: 'We ship the editor on ' },
      { insert: 'Thursday', attributes: { bold: true } },
      { insert: '. Draft notes are in the ' },
      { insert: 'team wiki', attributes: { link: 'https://example.com/wiki' } },
      { insert: '; everything here is saved as you type.\n' },
    ], 'user');
    q.setSelection(q.getLength() - 1, 0, 'user');
  });
  await alice.page.keyboard.type('Open questions: ');
  await alice.page.keyboard.press('Control+i');
  await alice.page.keyboard.type('who owns the rollout?');
  await converge(alice.page, bob.page);
  const contents = await bob.page.evaluate(() => window.tandem.quill.getContents().ops);
  assert.ok(contents.some((op) => op.insert === 'Thursday' && op.attributes?.bold), 'bold arrived: ' + JSON.stringify(contents));
  assert.ok(contents.some((op) => op.insert === 'team wiki' && op.attributes?.link === 'https://example.com/wiki'), 'link arrived');
  assert.ok(contents.some((op) => op.insert === 'who owns the rollout?' && op.attributes?.italic), 'italic arrived');
  assert.ok(contents.some((op) => op.insert === '\n' && op.attributes?.header === 1), 'heading arrived');

  // Bob selects "Thursday": Alice sees his caret, name and selection.
  await bob.page.evaluate(() => {
    const q = window.tandem.quill;
    q.focus();
    q.setSelection(q.getText().indexOf('Thursday'), 8, 'user');
  });
  const label = alice.page.locator('.tandem-caret-label', { hasText: 'Bob' });
  await label.waitFor({ state: 'visible', timeout: 10000 });
  await alice.page.locator('.tandem-selection').first().waitFor({ state: 'visible' });
  await bob.page.locator('.tandem-caret-label', { hasText: 'Alice' }).waitFor({ state: 'visible', timeout: 10000 });
  // Alice's selection is kept when Bob's edit arrives before it
  await alice.page.evaluate(() => window.tandem.quill.setSelection(window.tandem.quill.getText().indexOf('Open'), 4, 'user'));
  const before = await alice.page.evaluate(() => window.tandem.quill.getSelection());
  await bob.page.evaluate(() => window.tandem.quill.insertText(0, '✏️ ', 'user'));
  await converge(alice.page, bob.page);
  const afterSel = await alice.page.evaluate(() => window.tandem.quill.getSelection());
  assert.deepEqual(afterSel, { index: before.index + 3, length: 4 });
  await bob.page.evaluate(() => window.tandem.quill.setSelection(window.tandem.quill.getText().indexOf('Thursday'), 8, 'user'));
  await alice.page.locator('.tandem-selection').first().waitFor({ state: 'visible' });
  await alice.page.waitForFunction(() => document.querySelectorAll('#people .avatar').length === 2);

  mkdirSync(ARTIFACTS, { recursive: true });
  await alice.page.screenshot({ path: `${ARTIFACTS}demo-two-users.png` });
  assert.deepEqual([...alice.errors, ...bob.errors], []);
  await alice.context.close();
  await bob.context.close();
});

test('edits made offline survive a page reload and are sent when back online', { skip, timeout: 60000 }, async () => {
  const id = `reload-${Date.now()}`;
  let blocked = false;
  let live = null;
  // The WebSocket is routed through Playwright so that "offline" can be
  // simulated while the page itself can still be reloaded over HTTP.
  const routeSocket = async (page) =>
    page.routeWebSocket(/\/collab/, (ws) => {
      if (blocked) return ws.close({ code: 1006, reason: 'offline' });
      live = ws;
      ws.connectToServer();
    });
  const carol = await person('carol', id, { beforeLoad: routeSocket });
  const dave = await person('dave', id);
  await carol.page.click('.ql-editor');
  await carol.page.keyboard.type('Written online. ');
  await converge(carol.page, dave.page);

  blocked = true;
  await live.close({ code: 1006, reason: 'cut' });
  await carol.page.waitForFunction(() => window.tandem.doc.status !== 'synced' && !window.tandem.client._online);
  await carol.page.keyboard.type('Written offline, then reloaded.');
  await carol.page.evaluate(() => window.tandem.doc.whenSaved());
  await carol.page.reload();
  await carol.page.waitForFunction(() => window.tandem?.doc.text.includes('reloaded.'), null, { timeout: 15000 });
  assert.match(await editorText(carol.page), /Written online\. Written offline, then reloaded\./);
  assert.equal(await carol.page.evaluate(() => window.tandem.doc.pending), true);

  blocked = false;
  await carol.page.evaluate(() => window.tandem.client.reconnectNow());
  const final = await converge(carol.page, dave.page);
  assert.equal(final.text, 'Written online. Written offline, then reloaded.');
  assert.equal(await docText(dave.page), final.text);
  await carol.context.close();
  await dave.context.close();
});

test('undo/redo with the keyboard keep the other\'s text; the time slider shows and restores an old version; authorship colours; screenshot', { skip, timeout: 90000 }, async () => {
  const id = `undo-keys-${Date.now()}`;
  const alice = await person('alice', id);
  const bob = await person('bob', id);
  await alice.page.click('.ql-editor');
  await alice.page.keyboard.type('Hello world');
  const typed = (await converge(alice.page, bob.page)).v;
  // Bob types inside Alice's text
  await bob.page.evaluate(() => {
    const q = window.tandem.quill;
    q.focus();
    q.setSelection(5, 0, 'user');
  });
  await bob.page.keyboard.type(' there');
  await converge(alice.page, bob.page);
  assert.equal(await docText(alice.page), 'Hello there world');
  assert.equal(await alice.page.evaluate(() => document.getElementById('undo').disabled), false, 'the undo button is enabled');
  await alice.page.keyboard.press('Control+z'); // "world"
  await alice.page.keyboard.press('Control+z'); // "Hello "
  await converge(alice.page, bob.page);
  assert.equal(await docText(bob.page), ' there', "Bob's text stays");
  assert.equal(await editorText(alice.page), ' there\n');
  await alice.page.keyboard.press('Control+Shift+z');
  await alice.page.keyboard.press('Control+y');
  await converge(alice.page, bob.page);
  assert.equal(await docText(bob.page), 'Hello there world');
  assert.equal(await editorText(bob.page), 'Hello there world\n');
  // the buttons do the same
  await alice.page.click('#undo');
  await converge(alice.page, bob.page);
  assert.equal(await docText(bob.page), 'Hello there ');
  assert.equal(await alice.page.evaluate(() => document.getElementById('redo').disabled), false);
  // the history panel: the slider goes back to before Bob typed
  const helloWorld = await alice.page.evaluate((v) => window.tandem.doc.history.version(v).then((past) => past.text), typed);
  assert.equal(helloWorld, 'Hello world', `version ${typed}: Alice's keystrokes`);
  await alice.page.click('#history-button');
  await alice.page.waitForFunction(() => /\(now\)/.test(document.getElementById('history-info').textContent));
  await alice.page.click('#history-colors');
  // authorship colours: Alice's and Bob's text in two colours, and a legend naming both
  await alice.page.waitForFunction(() => document.querySelectorAll('#history-legend span').length === 2);
  const colours = await alice.page.evaluate(() => [...new Set([...document.querySelectorAll('#history-view .ql-editor span[style*="background"]')].map((e) => e.style.backgroundColor))]);
  assert.equal(colours.length, 2, `two authors' colours: ${colours}`);
  assert.deepEqual(await alice.page.evaluate(() => [...document.querySelectorAll('#history-legend span')].map((e) => e.textContent).sort()), ['alice', 'bob']);
  mkdirSync(ARTIFACTS, { recursive: true });
  await alice.page.setViewportSize({ width: 1180, height: 1250 });
  await alice.page.evaluate(() => window.scrollTo(0, 0));
  await alice.page.screenshot({ path: `${ARTIFACTS}history-panel.png` });
  await alice.page.locator('#history-slider').fill(String(typed));
  await alice.page.waitForFunction((v) => window.tandem.historyView.getText() === 'Hello world\n' && document.getElementById('history-info').textContent.startsWith(`Version ${v} of`), typed);
  await alice.page.fill('#label-name', 'before Bob');
  await alice.page.click('#label-form button');
  await alice.page.locator('#label-list button', { hasText: `before Bob · v${typed}` }).waitFor();
  // restore: one new op by Alice; Bob's page gets it as an ordinary edit
  await alice.page.click('#history-restore');
  await alice.page.waitForFunction(() => window.tandem.doc.text === 'Hello world');
  const final = await converge(alice.page, bob.page);
  assert.equal(final.text, 'Hello world');
  assert.equal(await editorText(bob.page), 'Hello world\n');
  const restoreOp = await bob.page.evaluate((v) => window.tandem.doc.history.changes(v - 1, v), final.v);
  assert.deepEqual(restoreOp.users, ['alice'], 'the restore is one op by Alice');
  assert.deepEqual([...alice.errors, ...bob.errors], []);
  await alice.context.close();
  await bob.context.close();
});

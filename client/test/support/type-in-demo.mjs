// Types into the demo page of a running Tandem server in headless Chromium, as
// a person would, and prints what the page's document holds once the server
// has acknowledged it. Used by tests/integration/test_wheel.py against a server
// installed from the built wheel:
//   node client/test/support/type-in-demo.mjs http://127.0.0.1:PORT DOC "text to type"
// Exits non-zero, with the reason, if the page fails to load, logs an error or
// never syncs.
import { launchChromium } from './chromium.mjs';

const [base, doc, text] = process.argv.slice(2);
if (!base || !doc || !text) {
  console.error('usage: type-in-demo.mjs URL DOC TEXT');
  process.exit(2);
}
const browser = await launchChromium();
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  page.on('response', (r) => r.status() >= 400 && errors.push(`${r.status()} ${r.url()}`));
  await page.goto(`${base}/?doc=${encodeURIComponent(doc)}&user=wheel`);
  const synced = () =>
    page.waitForFunction(() => window.tandem?.doc.status === 'synced' && !window.tandem.doc.pending, null, { timeout: 30000 });
  await synced();
  await page.click('.ql-editor');
  await page.keyboard.type(text);
  await page.waitForFunction((t) => window.tandem.doc.text.includes(t), text, { timeout: 30000 });
  await synced();
  const result = await page.evaluate(() => ({ text: window.tandem.doc.text, version: window.tandem.doc.version }));
  if (errors.length) throw new Error(`the page logged errors: ${errors.join('; ')}`);
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}

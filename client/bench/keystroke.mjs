// Per-keystroke CPU cost of the client, and its size.
//   local:  doc.submit(one-character insert) → state machine → op message (JSON, sent)
//   remote: a remote one-character insert arriving while we have an op in
//           flight and a buffer (transform twice, apply, emit)
// Median and p99 in µs over many keystrokes, on documents of several sizes.
// Run: npm run bench
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { performance } from 'node:perf_hooks';
import { TandemClient, MemoryStorage } from '../src/index.js';

class NullSocket {
  constructor() {
    this.readyState = 1;
    this.sent = 0;
    NullSocket.last = this;
  }
  send() {
    this.sent++;
  }
  close() {}
}

async function openDoc(text) {
  const client = new TandemClient({ url: 'ws://127.0.0.1:1/collab', token: 't', clientId: 'bench', WebSocket: NullSocket, storage: new MemoryStorage() });
  await client.ready;
  await new Promise((r) => setImmediate(r));
  const ws = NullSocket.last;
  ws.onmessage({ data: JSON.stringify({ type: 'hello', protocol: 1, client: 'bench', user: 'b', name: 'B', expires: 0 }) });
  const doc = client.open('bench');
  await new Promise((r) => setImmediate(r));
  ws.onmessage({ data: JSON.stringify({ type: 'snapshot', doc: 'bench', v: 1, content: [{ insert: text }], presence: [], permission: 'write' }) });
  doc._persist = () => {}; // measure the CPU path, not the offline store
  return { client, doc, ws };
}

const stats = (xs) => {
  xs.sort((a, b) => a - b);
  return { median: xs[Math.floor(xs.length / 2)], p99: xs[Math.floor(xs.length * 0.99)] };
};
const fmt = (s) => `median ${(s.median * 1000).toFixed(1).padStart(6)} µs   p99 ${(s.p99 * 1000).toFixed(1).padStart(7)} µs`;

async function benchLocal(text, n) {
  const { client, doc } = await openDoc(text);
  const times = [];
  let v = 1;
  for (let i = 0; i < n; i++) {
    const at = Math.floor((i * 7919) % doc.length);
    const t0 = performance.now();
    doc.insert(at, 'x');
    times.push(performance.now() - t0);
    doc._receive({ type: 'ack', doc: 'bench', seq: doc._state.inflight.seq, v: ++v }); // keep one op in flight per keystroke
  }
  client.close();
  return stats(times);
}

async function benchRemote(text, n) {
  const { client, doc } = await openDoc(text);
  doc.insert(0, 'in flight');
  doc.insert(5, 'buffer');
  const times = [];
  let v = 1;
  for (let i = 0; i < n; i++) {
    const at = Math.floor((i * 7919) % (text.length - 10)) + 10;
    const msg = { type: 'op', doc: 'bench', v: ++v, op: [{ retain: at }, { insert: 'y' }], client: 'other', user: 'o', seq: i };
    const t0 = performance.now();
    doc._receive(msg);
    times.push(performance.now() - t0);
  }
  client.close();
  return stats(times);
}

const para = 'The quick brown fox jumps over the lazy dog. ';
console.log('per keystroke (Node ' + process.version + ')');
const medians = {};
for (const size of [1000, 10000, 100000]) {
  const ascii = para.repeat(Math.ceil(size / para.length)).slice(0, size);
  const emoji = ascii.replace(/o/g, '😀');
  for (const [label, text] of [['ascii', ascii], ['emoji', emoji]]) {
    const n = size >= 100000 ? 1000 : 5000;
    await benchLocal(text, 200); // warm up
    const local = await benchLocal(text, n);
    console.log(`  local  ${String(size).padStart(6)} chars ${label}: ${fmt(local)}`);
    await benchRemote(text, 200);
    const remote = await benchRemote(text, n);
    console.log(`  remote ${String(size).padStart(6)} chars ${label}: ${fmt(remote)}`);
    medians[`${size} ${label}`] = { local: local.median, remote: remote.median };
  }
}
// The emoji text has a surrogate pair every ~11 characters; the client keeps
// an index of them (utf16.js SurrogateIndex) and its text in chunks (text.js),
// so its keystrokes should cost what ASCII ones do (issue: within 2×).
const [a, e] = [medians['100000 ascii'], medians['100000 emoji']];
console.log(`emoji / ascii at 100,000 chars, this run: local ${(e.local / a.local).toFixed(2)}×, remote ${(e.remote / a.remote).toFixed(2)}× (medians)`);

const srcDir = fileURLToPath(new URL('../src/', import.meta.url));
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.js')) files.push(p);
  }
};
walk(srcDir);
const all = Buffer.concat(files.map((f) => readFileSync(f)));
console.log(`bundle: ${files.length} files in src/, ${(all.length / 1024).toFixed(1)} KiB, gzip ${(gzipSync(all, { level: 9 }).length / 1024).toFixed(1)} KiB (plus quill-delta and its deps)`);

// Load generator: N WebSocket clients on one or many documents, K typists at R ops/s.
// Measures propagation latency per delivery (submit -> each other client receives it),
// lost deliveries, and (given --pid) the server's CPU seconds and peak RSS from /proc.
// Prints one JSON object on stdout. Only ever connects to the URL it is given
// (127.0.0.1 in every scenario we run). Stops by itself after --duration + --drain.
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1]?.startsWith('--') || all[i + 1] === undefined ? 'true' : all[i + 1]]);
    return pairs;
  }, []),
);
const url = args.url;
const clients = Number(args.clients ?? 10);
const typists = Number(args.typists ?? 1);
const rate = Number(args.rate ?? 5);
const docs = Number(args.docs ?? 1);
const duration = Number(args.duration ?? 10) * 1000;
const drain = Number(args.drain ?? 3) * 1000;
const connectRate = Number(args['connect-rate'] ?? 500); // connections per second
const protocol = args.protocol ?? 'tandem';
const token = args.token ?? '';
const pid = args.pid ? Number(args.pid) : null;
const idle = args.idle === 'true';
const hold = Number(args.hold ?? 0) * 1000;

const adapters = {
  // Tandem's JSON protocol: sugar inserts at the head, identified by (client, seq).
  tandem: {
    url: (doc, i) => `${url}?token=${token}&doc=${doc}&client=g${i}`,
    edit: (c, seq) => JSON.stringify({ type: 'insert', pos: 0, text: 'x', seq }),
    // Returns [client, seq] pairs of edits by others delivered in this frame.
    deliveries(data, self) {
      const parsed = JSON.parse(data);
      const out = [];
      for (const m of Array.isArray(parsed) ? parsed : [parsed]) {
        if (m.type === 'op' && m.client !== self) out.push([m.client, m.seq]);
      }
      return out;
    },
    ready: (data) => data.includes('"snapshot"'),
  },
  // A trivial relay: the frame is forwarded verbatim to the document's other clients.
  relay: {
    url: (doc) => `${url}/${doc}`,
    edit: (c, seq) => JSON.stringify({ c: c.id, s: seq }),
    deliveries(data, self) {
      const m = JSON.parse(data);
      return m.c !== self ? [[m.c, m.s]] : [];
    },
    ready: () => true,
    immediate: true,
  },
};
const adapter = adapters[protocol];
if (!adapter) throw new Error(`unknown protocol ${protocol}`);

const sent = new Map(); // "client:seq" -> send time
const latencies = [];
let delivered = 0;
let expected = 0;
let errors = 0;
const sockets = [];

function cpuSeconds() {
  if (!pid) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    const ticks = Number(stat[11]) + Number(stat[12]);
    return ticks / 100;
  } catch { return null; }
}
let peakRss = 0;
function sampleRss() {
  if (!pid) return;
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/);
    if (m) peakRss = Math.max(peakRss, Number(m[1]) * 1024);
  } catch { /* gone */ }
}

function open(i) {
  const doc = `load-${i % docs}`;
  const c = { id: `g${i}`, doc, ws: null, ready: false };
  return new Promise((resolve) => {
    const ws = new WebSocket(adapter.url(doc, i), { perMessageDeflate: false });
    c.ws = ws;
    const done = () => { c.ready = true; resolve(c); };
    ws.on('open', () => { if (adapter.immediate) done(); });
    ws.on('message', (data) => {
      const text = data.toString();
      if (!c.ready) { if (adapter.ready(text)) done(); return; }
      const now = performance.now();
      for (const [client, seq] of adapter.deliveries(text, c.id)) {
        const t = sent.get(`${client}:${seq}`);
        if (t !== undefined) { latencies.push(now - t); delivered++; }
      }
    });
    ws.on('error', () => { errors++; resolve(c); });
  });
}

async function main() {
  const cpu0 = cpuSeconds();
  const opened = [];
  for (let i = 0; i < clients; i++) {
    opened.push(open(i));
    if (i % Math.max(1, Math.floor(connectRate / 20)) === 0) await new Promise((r) => setTimeout(r, 50));
  }
  sockets.push(...(await Promise.all(opened)));
  const connected = sockets.filter((c) => c.ready).length;
  const cpu1 = cpuSeconds();
  sampleRss();
  if (idle) {
    const until = performance.now() + hold;
    while (performance.now() < until) { sampleRss(); await new Promise((r) => setTimeout(r, 1000)); }
    console.log(JSON.stringify({ protocol, clients, connected, errors, rssBytes: peakRss, connectCpu: cpu1 - cpu0 }));
    for (const c of sockets) c.ws.terminate();
    return;
  }
  // Typists: K per document, spread evenly; the rest only listen.
  const byDoc = new Map();
  for (const c of sockets) { if (!byDoc.has(c.doc)) byDoc.set(c.doc, []); byDoc.get(c.doc).push(c); }
  const writers = [];
  for (const members of byDoc.values()) writers.push(...members.slice(0, typists).map((c) => [c, members.length - 1]));
  const interval = 1000 / rate;
  const start = performance.now();
  const rss = setInterval(sampleRss, 250);
  await Promise.all(writers.map(async ([c, listeners], w) => {
    let seq = 0;
    await new Promise((r) => setTimeout(r, (w * interval) / writers.length));
    while (performance.now() - start < duration) {
      seq += 1;
      sent.set(`${c.id}:${seq}`, performance.now());
      expected += listeners;
      if (c.ws.readyState === WebSocket.OPEN) c.ws.send(adapter.edit(c, seq));
      const next = start + 0; // keep a fixed cadence per typist
      await new Promise((r) => setTimeout(r, interval));
    }
  }));
  await new Promise((r) => setTimeout(r, drain));
  clearInterval(rss);
  const cpu2 = cpuSeconds();
  latencies.sort((a, b) => a - b);
  const q = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : null);
  const result = {
    protocol, clients, connected, typists, rate, docs,
    ops: sent.size, expected, delivered, lost: expected - delivered,
    p50: q(0.5), p95: q(0.95), p99: q(0.99), max: latencies.at(-1) ?? null,
    serverCpu: cpu2 !== null && cpu1 !== null ? cpu2 - cpu1 : null,
    serverRss: peakRss || null,
    generatorCpu: process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6,
    errors,
  };
  console.log(JSON.stringify(result));
  for (const c of sockets) c.ws.terminate();
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });

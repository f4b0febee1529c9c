// Load generator: one Node process driving many raw WebSocket clients against Tandem
// or one of its peers, through a small adapter per protocol.
//
//   node loadgen.mjs --protocol P --url ws://127.0.0.1:PORT [--token T]
//        --clients N --typists K --rate R --docs D --duration S [--warmup S] [--drain S]
//        [--connect-rate C] [--pid SERVER_PID] [--idle --hold S] [--announce]
//
// Clients i = 0..N-1 join document load-(i % D); the first K clients of each document
// type one character at the head, R times a second each; everyone else listens. The
// first --warmup seconds of typing (1 by default) are not measured.
// Every delivery (an edit by another client reaching a client) is timed from the
// moment its author sent it; deliveries that never arrive by the end of --drain are
// lost. With --pid, the server's CPU seconds (utime+stime over the measured phase) and
// peak RSS come from /proc. --idle opens the connections, holds them for --hold
// seconds and reports the server's RSS growth per connection instead. --announce
// writes "typing" and "drained" to stderr as the measured phase starts and ends
// (bench/profile_path.py profiles the server between the two).
// Its "tail" says what the slowest deliveries were: the max's op (seq, sent how many ms
// into the typing, to a typist or a reader), and of the slowest 0.1 %, the share that
// reached typists and the share that were typists' first two ops; and p99, p99.9 and
// max of the deliveries to readers alone.
// Prints one JSON object on stdout. Connects only to --url (127.0.0.1 in every
// scenario we run) and stops by itself.
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import * as Y from 'yjs';
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith('--')) {
      const next = all[i + 1];
      pairs.push([arg.slice(2), next === undefined || next.startsWith('--') ? 'true' : next]);
    }
    return pairs;
  }, []),
);
// --url may list several nodes (comma-separated): client i connects to node i mod n.
const bases = (args.url ?? 'ws://127.0.0.1:8080').split(',').map((u) => u.replace(/\/+$/, ''));
const base = bases[0];
const protocol = args.protocol ?? 'tandem';
const token = args.token ?? '';
const clients = Number(args.clients ?? 10);
const typists = Number(args.typists ?? 1);
const rate = Number(args.rate ?? 5);
const docs = Number(args.docs ?? 1);
const duration = Number(args.duration ?? 10) * 1000;
const drain = Number(args.drain ?? 3) * 1000;
const connectRate = Number(args['connect-rate'] ?? 1000); // connections per second
// --pid may list several server processes (comma-separated): CPU and RSS are summed.
const pids = args.pid ? String(args.pid).split(',').map(Number) : [];
const pid = pids.length ? pids[0] : null;
const idle = args.idle === 'true';
const hold = Number(args.hold ?? 60) * 1000;
const announce = args.announce === 'true'; // say "typing" / "drained" on stderr

// -- the measurement -----------------------------------------------------------------

// The first --warmup seconds of typing are not measured: the first ops' deliveries were
// the slowest of every server, this generator's own code still being compiled.
const warmup = Number(args.warmup ?? 1) * 1000;
const measuredOps = Math.ceil((duration / 1000) * rate) + 2;
const warmOps = Math.ceil((warmup / 1000) * rate); // seqs 1..warmOps; then the measured ones
const maxOps = warmOps + measuredOps;
const sentAt = new Map(); // author index -> Float64Array of send times by seq (1-based)
// Per delivery: its latency, its op's seq, whether it reached a typist, and when its op
// was sent (ms into the typing phase): what the slowest deliveries were. Typed arrays
// sized once the typists are known (``record``): plain arrays growing to 250,000 numbers
// made the generator's own collector stop it mid-run, a stall in every server's max.
let latencies = new Float64Array(0);
let deliverySeqs = new Int32Array(0);
let toTypists = new Uint8Array(0);
let sentAts = new Float64Array(0);
let recorded = 0;
let typingStart = 0;
const ackLatencies = []; // author's send -> its ack, where the protocol has acks
let delivered = 0;
let duplicates = 0;
let expected = 0;
let errors = 0;
let closedEarly = 0;
let measuring = false;

/** Client `c` received the edit `seq` of the client with index `author`. */
function deliver(c, author, seq) {
  if (author === c.i || !measuring) return;
  const times = sentAt.get(author);
  if (times === undefined || !(seq > 0) || seq > maxOps) return;
  let seen = c.seen.get(author); // seq -> 1 once delivered to c
  if (seen === undefined) c.seen.set(author, (seen = new Uint8Array(maxOps + 1)));
  if (seen[seq]) { duplicates++; return; }
  seen[seq] = 1;
  const t = times[seq];
  if (t > 0) {
    const i = recorded++;
    latencies[i] = performance.now() - t;
    deliverySeqs[i] = seq - warmOps; // the measured op's number, from 1
    toTypists[i] = c.typist ? 1 : 0;
    sentAts[i] = t - typingStart;
    delivered++;
  }
}

/** Room for every delivery the typing can make: each writer's ops to its document's others. */
function record(writers) {
  const room = writers.reduce((sum, [, members]) => sum + measuredOps * (members.length - 1), 0);
  latencies = new Float64Array(room);
  deliverySeqs = new Int32Array(room);
  toTypists = new Uint8Array(room);
  sentAts = new Float64Array(room);
}

function cpuSeconds() {
  if (!pid) return null;
  try {
    return pids.reduce((sum, p) => {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ');
      return sum + (Number(stat[11]) + Number(stat[12])) / 100;
    }, 0);
  } catch { return null; }
}
function rssBytes() {
  if (!pid) return 0;
  try {
    return pids.reduce((sum, p) => {
      const m = readFileSync(`/proc/${p}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/);
      return sum + (m ? Number(m[1]) * 1024 : 0);
    }, 0);
  } catch { return 0; }
}
let peakRss = 0;
const sampleRss = () => { peakRss = Math.max(peakRss, rssBytes()); };

// -- adapters: one per protocol --------------------------------------------------------
// url(c): where client c connects; opened(c): first messages after the handshake;
// message(c, data, isBinary): parse a frame, call deliver() per edit of others and
// ready(c) once the client holds the document; edit(c, seq): the frame for edit seq.

/** Typist `c` got the ack of its edit `seq` (protocols that acknowledge: Tandem). */
function acked(c, seq) {
  if (!measuring) return;
  const t = sentAt.get(c.i)?.[seq];
  if (t > 0) ackLatencies.push(performance.now() - t);
}

function ready(c) {
  if (!c.ready) { c.ready = true; c.resolve(c); }
}

// A Tandem op message is {"type":"op","doc":D,"v":V,"op":[...],"client":"gI","user":U,"seq":S}
// (a frame may hold several): its fields are found in the frame's bytes, as the Yjs
// adapters read a few varints, with no string or match object made per delivery.
const OP_AT = Buffer.from('{"type":"op","doc":"');
const V_AT = Buffer.from('","v":');
const CLIENT_AT = Buffer.from('],"client":"g');
const SEQ_AT = Buffer.from('","seq":');
/** The decimal number at `data[at]`, or -1 if none starts there. */
function digits(data, at) {
  let n = -1;
  for (let b = data[at]; b >= 48 && b <= 57; b = data[++at]) n = (n < 0 ? 0 : n * 10) + b - 48;
  return n;
}
const TANDEM_ACK = /"type":"ack","doc":"[^"]*","seq":(\d+),"v":(\d+)/g;

const tandem = {
  url: (c) => `${bases[c.i % bases.length]}/collab?token=${token}&doc=${c.doc}&client=g${c.i}`,
  opened() {},
  message(c, data) {
    if (!c.ready) {
      const text = data.toString();
      if (!text.includes('"snapshot"')) return;
      const parsed = JSON.parse(text);
      for (const m of Array.isArray(parsed) ? parsed : [parsed]) if (m.type === 'snapshot') c.version = m.v;
      ready(c);
      return;
    }
    for (let at = data.indexOf(OP_AT); at >= 0; at = data.indexOf(OP_AT, at + 1)) {
      const v = data.indexOf(V_AT, at + OP_AT.length);
      const client = data.indexOf(CLIENT_AT, v);
      const seq = data.indexOf(SEQ_AT, client);
      if (v < 0 || client < 0 || seq < 0) break;
      c.version = Math.max(c.version, digits(data, v + V_AT.length));
      deliver(c, digits(data, client + CLIENT_AT.length), digits(data, seq + SEQ_AT.length));
    }
    if (c.typist) {
      const text = data.toString();
      for (const m of text.matchAll(TANDEM_ACK)) {
        c.version = Math.max(c.version, Number(m[2]));
        acked(c, Number(m[1]));
      }
    }
  },
  // A delta made on the client's last known version, as a real client sends it.
  edit: (c, seq) => `{"type":"op","v":${c.version},"seq":${seq},"op":[{"insert":"x"}]}`,
};

const relay = {
  url: (c) => `${base}/${c.doc}`,
  opened: (c) => ready(c),
  message(c, data) {
    const m = JSON.parse(data.toString());
    deliver(c, m.c, m.s);
  },
  edit: (c, seq) => `{"c":${c.i},"s":${seq},"op":[{"insert":"x"}]}`,
};

// ShareDB: JSON messages, one per frame; an op is identified by its author's
// connection id (`src`, learnt from the server's `init`) and `seq`.
const shareSrc = new Map();
const sharedb = {
  url: (c) => bases[c.i % bases.length],
  opened() {},
  message(c, data) {
    const m = JSON.parse(data.toString());
    if (m.a === 'init') {
      c.src = m.id;
      shareSrc.set(m.id, c.i);
      c.ws.send(JSON.stringify({ a: 'hs', id: null, protocol: 1, protocolMinor: 2 }));
      c.ws.send(JSON.stringify({ a: 's', c: 'docs', d: c.doc }));
    } else if (m.a === 's') {
      if (m.error) { errors++; return; }
      c.version = m.data?.v ?? c.version;
      ready(c);
    } else if (m.a === 'op') {
      if (m.error) { errors++; return; }
      if (m.src === c.src) { if (!('op' in m)) c.version = Math.max(c.version, m.v + 1); return; }
      c.version = Math.max(c.version, m.v + 1);
      const author = shareSrc.get(m.src);
      if (author !== undefined) deliver(c, author, m.seq);
    }
  },
  edit: (c, seq) => JSON.stringify({ a: 'op', c: 'docs', d: c.doc, v: c.version, seq, op: [{ insert: 'x' }] }),
};

// y-protocols (binary). Each typist owns a Y.Doc whose clientID is its index + 1, and
// types one character per edit, so edit `seq` is the item with clock seq - 1.
const emptyStateVector = Y.encodeStateVector(new Y.Doc());
const emptyUpdate = Y.encodeStateAsUpdate(new Y.Doc());

function syncMessage(prefix, sub, payload) {
  const e = encoding.createEncoder();
  if (prefix !== null) encoding.writeVarString(e, prefix);
  encoding.writeVarUint(e, 0); // sync
  encoding.writeVarUint(e, sub); // 0 step 1, 1 step 2, 2 update
  encoding.writeVarUint8Array(e, payload);
  return encoding.toUint8Array(e);
}

function deliverUpdate(c, update) {
  const d = decoding.createDecoder(update);
  if (decoding.readVarUint(d) === 1 && decoding.readVarUint(d) === 1) {
    const client = decoding.readVarUint(d);
    deliver(c, client - 1, decoding.readVarUint(d) + 1); // one struct: the common case
    return;
  }
  for (const s of Y.decodeUpdate(update).structs) {
    for (let k = 0; k < s.length; k++) deliver(c, s.id.client - 1, s.id.clock + k + 1);
  }
}

function yjsAdapter(name, { prefixed, url }) {
  return {
    url,
    opened(c) {
      const prefix = prefixed ? c.doc : null;
      if (prefixed) { // Hocuspocus: authenticate (an empty token) before syncing
        const e = encoding.createEncoder();
        encoding.writeVarString(e, c.doc);
        encoding.writeVarUint(e, 2);
        encoding.writeVarUint(e, 0);
        encoding.writeVarString(e, '');
        c.ws.send(encoding.toUint8Array(e));
      }
      c.ws.send(syncMessage(prefix, 0, emptyStateVector));
    },
    message(c, data) {
      const d = decoding.createDecoder(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      if (prefixed) decoding.readVarString(d);
      if (decoding.readVarUint(d) !== 0) return; // awareness, auth, sync status...
      const sub = decoding.readVarUint(d);
      const payload = decoding.readVarUint8Array(d);
      if (sub === 2) deliverUpdate(c, payload);
      else if (sub === 1) ready(c);
      else if (sub === 0) c.ws.send(syncMessage(prefixed ? c.doc : null, 1, emptyUpdate));
    },
    edit(c) {
      if (!c.ydoc) {
        c.ydoc = new Y.Doc();
        c.ydoc.clientID = c.i + 1;
        c.ydoc.on('update', (u) => { c.update = u; });
      }
      c.ydoc.getText('content').insert(0, 'x');
      return syncMessage(prefixed ? c.doc : null, 2, c.update);
    },
  };
}

const adapters = {
  tandem,
  relay,
  sharedb,
  hocuspocus: yjsAdapter('hocuspocus', { prefixed: true, url: () => base }),
  'y-websocket': yjsAdapter('y-websocket', { prefixed: false, url: (c) => `${base}/${c.doc}` }),
  pycrdt: yjsAdapter('pycrdt', { prefixed: false, url: (c) => `${base}/${c.doc}` }),
};
const adapter = adapters[protocol];
if (!adapter) throw new Error(`unknown protocol ${protocol}; one of ${Object.keys(adapters)}`);

// -- clients -------------------------------------------------------------------------

const everyone = [];

function open(i) {
  return new Promise((resolve) => {
    const c = { i, doc: `load-${i % docs}`, ws: null, ready: false, typist: false, version: 0, nextSeq: 1, seen: new Map(), resolve };
    everyone.push(c);
    const ws = new WebSocket(adapter.url(c), { perMessageDeflate: false });
    c.ws = ws;
    ws.binaryType = 'nodebuffer';
    ws.on('open', () => adapter.opened(c));
    ws.on('message', (data, isBinary) => {
      try { adapter.message(c, data, isBinary); } catch (e) { errors++; }
    });
    ws.on('error', () => { errors++; resolve(c); });
    ws.on('close', () => { if (measuring) closedEarly++; resolve(c); });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

async function connectAll() {
  const opened = [];
  const step = Math.max(1, Math.round(connectRate / 20));
  for (let i = 0; i < clients; i++) {
    opened.push(open(i));
    if ((i + 1) % step === 0) await sleep(50);
  }
  // A client that is not ready within 60 s counts as not connected.
  await Promise.race([Promise.all(opened), sleep(60000)]);
  return everyone;
}

async function main() {
  const rss0 = rssBytes();
  const cpu0 = cpuSeconds();
  const started = performance.now();
  const sockets = await connectAll();
  const connected = sockets.filter((c) => c.ready).length;
  const connectSeconds = (performance.now() - started) / 1000;
  const cpu1 = cpuSeconds();
  if (idle) {
    const until = performance.now() + hold;
    let held = 0;
    while (performance.now() < until) { sampleRss(); await sleep(1000); }
    held = sockets.filter((c) => c.ready && c.ws.readyState === WebSocket.OPEN).length;
    const rss1 = rssBytes();
    console.log(JSON.stringify({
      protocol, clients, docs, connected, held, errors, connectSeconds,
      rssBefore: rss0, rssHeld: rss1, serverRss: peakRss,
      bytesPerConnection: connected ? (rss1 - rss0) / connected : null,
      connectCpu: cpu1 !== null ? cpu1 - cpu0 : null,
      serverCpu: cpuSeconds() !== null ? cpuSeconds() - cpu0 : null,
      generatorCpu: (process.cpuUsage().user + process.cpuUsage().system) / 1e6,
    }));
    for (const c of sockets) c.ws.terminate();
    return;
  }
  // Typists: the first K ready clients of each document.
  const byDoc = new Map();
  for (const c of sockets) {
    if (!c.ready) continue;
    if (!byDoc.has(c.doc)) byDoc.set(c.doc, []);
    byDoc.get(c.doc).push(c);
  }
  const writers = [];
  for (const members of byDoc.values()) {
    for (const c of members.slice(0, typists)) {
      c.typist = true;
      sentAt.set(c.i, new Float64Array(maxOps + 1));
      writers.push([c, members]);
    }
  }
  record(writers);
  const interval = 1000 / rate;
  let ops = 0;
  // Each typist keeps a fixed cadence from `grid` on (no drift, the same across the
  // warm-up and the measured phase), typists staggered evenly; this types the ops due
  // from `from` for `span` ms, up to seq `last`. Unmeasured ops are delivered and read
  // like the others, but not timed.
  let grid = 0;
  const typing = (from, span, last, measured) =>
    Promise.all(writers.map(async ([c, members], w) => {
      const times = sentAt.get(c.i);
      for (;;) {
        const seq = c.nextSeq;
        const at = grid + (w * interval) / writers.length + (seq - 1) * interval;
        if (at - from >= span || seq > last) break;
        await sleep(at - performance.now());
        c.nextSeq++;
        if (c.ws.readyState !== WebSocket.OPEN) continue;
        const frame = adapter.edit(c, seq);
        if (measured) times[seq] = performance.now();
        c.ws.send(frame);
        if (!measured) continue;
        ops++;
        for (const m of members) if (m !== c && m.ws.readyState === WebSocket.OPEN) expected++;
      }
    }));
  await sleep(200);
  measuring = true;
  grid = performance.now();
  await typing(grid, Infinity, warmOps, false);
  const gen0 = process.cpuUsage();
  const cpuStart = cpuSeconds();
  if (announce) console.error('typing'); // a profiler waiting for the measured phase
  sampleRss();
  const rssTimer = setInterval(sampleRss, 250);
  const start = grid + warmOps * interval;
  typingStart = start;
  await typing(start, duration, maxOps, true);
  const sendEnd = performance.now();
  // Drain: wait until everything arrived or --drain passed.
  while (performance.now() - sendEnd < drain && delivered < expected) await sleep(50);
  measuring = false;
  if (announce) console.error('drained');
  clearInterval(rssTimer);
  const cpuEnd = cpuSeconds();
  const gen = process.cpuUsage(gen0);
  const sorted = latencies.slice(0, recorded).sort(); // a typed array sorts numerically
  const tail = slowest(sorted);
  ackLatencies.sort((a, b) => a - b);
  const quantile = (xs, p) => (xs.length ? xs[Math.min(xs.length - 1, Math.floor(p * xs.length))] : null);
  const q = (p) => quantile(sorted, p);
  console.log(JSON.stringify({
    protocol, clients, connected, typists, rate, docs, connectSeconds,
    ops, expected, delivered, lost: expected - delivered, duplicates,
    p50: q(0.5), p95: q(0.95), p99: q(0.99), p999: q(0.999), max: sorted.length ? sorted[sorted.length - 1] : null,
    ackP50: quantile(ackLatencies, 0.5), ackP99: quantile(ackLatencies, 0.99),
    serverCpu: cpuEnd !== null && cpuStart !== null ? cpuEnd - cpuStart : null,
    serverRss: peakRss || null,
    generatorCpu: (gen.user + gen.system) / 1e6,
    measuredSeconds: (performance.now() - start) / 1000,
    errors, closedEarly, tail,
  }));
  for (const c of sockets) c.ws.terminate();
}

/** The slowest deliveries: the max's op (seq, sent how long into typing, to a typist or
 *  not), and of the slowest 0.1 %, the share that reached typists and the share that
 *  were a typist's first two ops (a warm-up). */
function slowest(sorted) {
  const n = sorted.length;
  if (!n) return null;
  let worst = 0;
  for (let i = 1; i < n; i++) if (latencies[i] > latencies[worst]) worst = i;
  const cut = sorted[n - 1 - Math.min(n - 1, Math.floor(n / 1000))];
  let count = 0;
  let typists = 0;
  let firstOps = 0;
  const readers = [];
  for (let i = 0; i < n; i++) {
    if (!toTypists[i]) readers.push(latencies[i]);
    if (latencies[i] < cut) continue;
    count++;
    if (toTypists[i]) typists++;
    if (deliverySeqs[i] <= 2) firstOps++;
  }
  readers.sort((a, b) => a - b);
  const at = (p) => (readers.length ? readers[Math.min(readers.length - 1, Math.floor(p * readers.length))] : null);
  return {
    maxSeq: deliverySeqs[worst],
    maxSentAt: Math.round(sentAts[worst]),
    maxToTypist: toTypists[worst] === 1,
    slowestTypistShare: typists / count,
    slowestFirstOpsShare: firstOps / count,
    // The same run's deliveries to readers only (clients that never type): what a
    // server that holds a typist's deliveries behind its own ack costs typists alone.
    readerP99: at(0.99),
    readerP999: at(0.999),
    readerMax: readers.length ? readers[readers.length - 1] : null,
  };
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });

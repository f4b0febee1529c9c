// The JavaScript client (client/src) driven from a Python test, as a person at
// a keyboard would: one JSON command a line on stdin, one JSON answer a line on
// stdout ({"ok": true, "v", "text", "status", "incarnation"} or {"ok": false, "error"}).
// Usage: node jsclient.mjs WS_URL TOKEN DOC
// Commands: ready, type {keys} (each at the end, waiting for its ack), insert
// {index, text} (no wait), offline, online, synced, at {v} (until version v has
// arrived: synced only waits for this client's own ops), state.
import { createInterface } from 'node:readline';
import { MemoryStorage, TandemClient } from '../../client/src/index.js';

const [url, token, id] = process.argv.slice(2);
const client = new TandemClient({ url, token, storage: new MemoryStorage(), backoff: { min: 50, max: 200 } });
client.on('error', (e) => process.stderr.write(`client error ${JSON.stringify(e)}\n`));
const doc = client.open(id);
doc.on('error', (e) => process.stderr.write(`document error ${JSON.stringify(e)}\n`));

const state = () => ({ v: doc.version, text: doc.text, status: doc.status, incarnation: doc._incarnation });

const commands = {
  async ready() {
    await doc.ready;
    await doc.whenSynced();
  },
  async type({ keys }) {
    for (const key of keys) {
      doc.insert(doc.text.length, key);
      await doc.whenSynced();
    }
  },
  async insert({ index, text }) {
    doc.insert(index, text);
  },
  async offline() {
    client.disconnect();
  },
  async online() {
    client.connect();
  },
  async synced() {
    await doc.whenSynced();
  },
  async at({ v }) {
    if (doc.version < v) await doc.once('change', (change) => change.version >= v);
  },
  async state() {},
};

let queue = Promise.resolve();
createInterface({ input: process.stdin }).on('line', (line) => {
  queue = queue.then(async () => {
    const command = JSON.parse(line);
    try {
      await commands[command.cmd](command);
      process.stdout.write(JSON.stringify({ ok: true, ...state() }) + '\n');
    } catch (err) {
      process.stdout.write(JSON.stringify({ ok: false, error: String(err) }) + '\n');
    }
  });
}).on('close', () => {
  client.close();
  process.exit(0);
});

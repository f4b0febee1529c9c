// ShareDB 7 with the rich-text OT type over plain `ws`: one JSON message per frame.
// Documents load-0..load-(DOCS-1) are created up front in collection "docs".
// Usage: node sharedb.mjs PORT [DOCS]
//
// By default the database and pub/sub are ShareDB's in-memory ones. With
// SHAREDB_PG_URL (a PostgreSQL connection string) the documents and ops live in
// PostgreSQL through `sharedb-postgres`, in the schema SHAREDB_PG_SCHEMA (its `ops`
// and `snapshots` tables, made by the harness beforehand): ShareDB acknowledges an op
// to its author, and publishes it, only after the INSERT that commits it returned
// (each op its own transaction, so durable as the server's `synchronous_commit`
// makes it). With SHAREDB_REDIS_URL as well, ops are published through Redis
// (`sharedb-redis-pubsub`, channels prefixed by SHAREDB_REDIS_PREFIX), so several
// of these processes on the same schema serve the same documents.
import http from 'node:http';
import { Duplex } from 'node:stream';
import ShareDB from 'sharedb';
import richText from 'rich-text';
import { WebSocketServer } from 'ws';

ShareDB.types.register(richText.type);
const port = Number(process.argv[2] ?? 1234);
const docs = Number(process.argv[3] ?? 1);
const options = {};
if (process.env.SHAREDB_PG_URL) {
  const { default: PostgresDB } = await import('sharedb-postgres');
  const schema = process.env.SHAREDB_PG_SCHEMA ?? 'public';
  options.db = new PostgresDB({
    connectionString: process.env.SHAREDB_PG_URL,
    options: `-c search_path=${schema}`,
  });
}
if (process.env.SHAREDB_REDIS_URL) {
  const { default: RedisPubSub } = await import('sharedb-redis-pubsub');
  options.pubsub = new RedisPubSub({
    url: process.env.SHAREDB_REDIS_URL,
    prefix: process.env.SHAREDB_REDIS_PREFIX,
  });
}
const backend = new ShareDB(options);

// A JSON message stream over one socket (what @teamwork/websocket-json-stream does).
function jsonStream(ws) {
  const stream = new Duplex({
    objectMode: true,
    read() {},
    write(message, _encoding, done) {
      if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(message));
      done();
    },
  });
  ws.on('message', (data) => {
    try { stream.push(JSON.parse(data.toString())); } catch { ws.close(1003, 'bad json'); }
  });
  ws.on('close', () => { stream.push(null); stream.destroy(); });
  ws.on('error', () => {});
  stream.on('error', () => ws.close());
  return stream;
}

// Another node on the same database may have created a document first: that is fine.
const connection = backend.connect();
const created = (doc, resolve, reject) => (err) => {
  if (!err || err.code === 'ERR_DOC_ALREADY_CREATED') return resolve();
  return reject(err);
};
for (let first = 0; first < docs; first += 100) {
  await Promise.all(Array.from({ length: Math.min(100, docs - first) }, (_, k) => new Promise((resolve, reject) => {
    const doc = connection.get('docs', `load-${first + k}`);
    doc.fetch((err) => {
      if (err) return reject(err);
      if (doc.type) return resolve();
      doc.create([], 'rich-text', created(doc, resolve, reject));
    });
  })));
}

const server = http.createServer((_req, res) => res.end('sharedb'));
const wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on('connection', (ws, req) => backend.listen(jsonStream(ws), req));
server.listen(port, '127.0.0.1');

// ShareDB 7 with the rich-text OT type, in-memory database and pub/sub (its defaults),
// over plain `ws`: one JSON message per frame. Documents load-0..load-(DOCS-1) are
// created up front in collection "docs". Usage: node sharedb.mjs PORT [DOCS]
import http from 'node:http';
import { Duplex } from 'node:stream';
import ShareDB from 'sharedb';
import richText from 'rich-text';
import { WebSocketServer } from 'ws';

ShareDB.types.register(richText.type);
const port = Number(process.argv[2] ?? 1234);
const docs = Number(process.argv[3] ?? 1);
const backend = new ShareDB();

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

const connection = backend.connect();
await Promise.all(Array.from({ length: docs }, (_, i) => new Promise((resolve, reject) => {
  const doc = connection.get('docs', `load-${i}`);
  doc.fetch((err) => {
    if (err) return reject(err);
    if (doc.type) return resolve();
    doc.create([], 'rich-text', (e) => (e ? reject(e) : resolve()));
  });
})));

const server = http.createServer((_req, res) => res.end('sharedb'));
const wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on('connection', (ws, req) => backend.listen(jsonStream(ws), req));
server.listen(port, '127.0.0.1');

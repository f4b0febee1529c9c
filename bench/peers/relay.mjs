// The floor: a do-nothing relay. Each frame is forwarded verbatim to the other
// clients connected to the same path (the document). No parsing, no storage.
// Usage: node relay.mjs PORT
import http from 'node:http';
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2] ?? 1234);
const rooms = new Map();
const server = http.createServer((_req, res) => res.end('relay'));
const wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on('connection', (ws, req) => {
  const room = req.url ?? '/';
  if (!rooms.has(room)) rooms.set(room, new Set());
  const members = rooms.get(room);
  members.add(ws);
  ws.on('message', (data, isBinary) => {
    for (const other of members) if (other !== ws) other.send(data, { binary: isBinary });
  });
  ws.on('close', () => members.delete(ws));
  ws.on('error', () => {});
});
server.listen(port, '127.0.0.1');

// The reference y-websocket server (@y/websocket-server), documents in memory,
// the document name taken from the URL path. Usage: node y-websocket.mjs PORT
import http from 'node:http';
import { WebSocketServer } from 'ws';
import { setupWSConnection } from '@y/websocket-server/utils';

const port = Number(process.argv[2] ?? 1234);
const server = http.createServer((_req, res) => res.end('y-websocket'));
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
wss.on('connection', setupWSConnection);
server.on('upgrade', (req, socket, head) => {
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});
server.listen(port, '127.0.0.1');
